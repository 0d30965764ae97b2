"""``mtlmeta multitask``: train one multi-task architecture with one loss weighting, test, report Delta-m.

Example::

    mtlmeta multitask --dataset synthetic --correlation 0.5 --arch mmoe --weighting uncertainty \\
        --train-baseline --json runs/mmoe.json

The JSON holds the per-task test metrics and, when a single-task baseline is known
(``--train-baseline``, ``--baseline-json`` or ``--arch single`` itself), Delta-m in percent.

It also runs data-parallel under ``torchrun`` (each mini-batch split across the processes, see
:mod:`mtl.utils.distributed`; weightings equal, fixed, uncertainty and dwa)::

    torchrun --standalone --nproc_per_node 2 -m mtl.cli multitask --dataset synthetic --batch-size 64 ...
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from mtl.cli import budget_from_args
from mtl.errors import ConfigError
from mtl.multitask.architectures import ARCHITECTURES, TIE_MODES, build_model
from mtl.multitask.data import DATASETS, MultiTaskProblem, load_problem
from mtl.multitask.tasks import delta_m
from mtl.multitask.trainer import SELECT_BY, MultiTaskConfig, MultiTaskTrainer
from mtl.multitask.weighting import MGDA_NORMALIZATIONS, WEIGHTINGS, make_weighting

__all__ = ["register", "run_multitask"]

RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "curves.png")


def _problem(args: argparse.Namespace) -> MultiTaskProblem:
    opts: dict[str, Any] = {"seed": args.seed}
    if args.correlation is not None and args.dataset != "synthetic":
        raise ConfigError(f"--correlation applies to --dataset synthetic only, not {args.dataset!r}")
    if args.dataset == "synthetic":
        opts["correlation"] = 0.5 if args.correlation is None else args.correlation
        if args.train_samples:
            opts["num_train"] = args.train_samples
    elif args.dataset in ("multi-glyphs", "multi-omniglot") and args.train_samples:
        opts["sizes"] = (args.train_samples, max(200, args.train_samples // 6), max(400, args.train_samples // 3))
    elif args.train_samples:
        raise ConfigError(f"--train-samples applies to synthetic and multi-* datasets, not {args.dataset!r}")
    problem = load_problem(args.dataset, root=args.root, **opts)
    if args.label_fraction is not None:
        if not 0 < args.label_fraction <= 1:
            raise ConfigError(f"--label-fraction must be in (0, 1], got {args.label_fraction!r}")
        problem.train = problem.train.drop_labels(1.0 - args.label_fraction, seed=args.seed)
        problem.info["label_fraction"] = args.label_fraction
    return problem


def _backbone(args: argparse.Namespace, problem: MultiTaskProblem) -> tuple[str, dict[str, Any]]:
    shape = problem.input_shape
    name = args.backbone or ("mlp" if len(shape) == 1 else "conv4")
    kwargs = dict(args.backbone_kwargs)
    if name == "mlp":
        kwargs.setdefault("in_features", math.prod(shape))
        if len(shape) == 1:
            kwargs.setdefault("hidden", [16])
    elif len(shape) == 3:
        kwargs.setdefault("in_channels", shape[0])
        kwargs.setdefault("image_size", shape[1])
    return name, kwargs


def _arch_options(args: argparse.Namespace) -> dict[str, Any]:
    given = {"--lambda": args.soft_lambda, "--tie": args.tie, "--tied-layers": args.tied_layers,
             "--stitch-init": args.stitch_init, "--experts": args.experts}
    owner = {"--lambda": "soft", "--tie": "soft", "--tied-layers": "soft", "--stitch-init": "crossstitch",
             "--experts": "mmoe"}
    for flag, value in given.items():
        if value is not None and owner[flag] != args.arch:
            raise ConfigError(f"{flag} applies to --arch {owner[flag]} only, not {args.arch!r}")
    if args.arch == "soft":
        return {"strength": 1e-2 if args.soft_lambda is None else args.soft_lambda, "tie": args.tie or "mean",
                "tied_layers": args.tied_layers or r"^features\."}
    if args.arch == "crossstitch":
        return {"init_self": 0.9 if args.stitch_init is None else args.stitch_init}
    if args.arch == "mmoe":
        return {"num_experts": 4 if args.experts is None else args.experts}
    return {}


def _weighting_options(args: argparse.Namespace) -> dict[str, Any]:
    given = {"--task-weights": (args.task_weights, "fixed", "weights"),
             "--gradnorm-alpha": (args.gradnorm_alpha, "gradnorm", "alpha"),
             "--dwa-temperature": (args.dwa_temperature, "dwa", "temperature"),
             "--cagrad-c": (args.cagrad_c, "cagrad", "c"),
             "--mgda-normalization": (args.mgda_normalization, "mgda", "normalization")}
    opts: dict[str, Any] = {}
    for flag, (value, owner, key) in given.items():
        if value is None:
            continue
        if owner != args.weighting:
            raise ConfigError(f"{flag} applies to --weighting {owner} only, not {args.weighting!r}")
        opts[key] = value
    if args.weighting == "fixed" and "weights" not in opts:
        raise ConfigError('--weighting fixed needs --task-weights, e.g. \'{"y1": 1.0, "y2": 0.5}\'')
    if args.weighting == "pcgrad":
        opts["seed"] = args.seed
    return opts


def _train(args: argparse.Namespace, problem: MultiTaskProblem, arch: str, arch_options: dict[str, Any],
           weighting: str, weighting_options: dict[str, Any], out_dir: Path | None, device: Any,
           resume: bool, progress: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    import torch

    torch.manual_seed(args.seed)
    backbone, bkw = _backbone(args, problem)
    model = build_model(arch, problem.tasks, backbone, bkw, head_hidden=args.head_hidden, **arch_options)
    extra = {"dataset": problem.summary(), "backbone": backbone, "backbone_kwargs": bkw,
             "head_hidden": args.head_hidden, "arch_options": arch_options,
             "weighting_options": weighting_options}
    config = MultiTaskConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, select_by=args.select, seed=args.seed,
                             progress=progress, log_every=args.log_every, precision=args.precision,
                             extra=json.loads(json.dumps(extra, default=str)))
    trainer = MultiTaskTrainer(model, problem.tasks, problem.train, problem.val,
                               make_weighting(weighting, **weighting_options), config, out_dir, device)
    if resume:
        assert out_dir is not None
        if not (out_dir / "last.pt").is_file():
            raise ConfigError(f"--resume: no last.pt in {str(out_dir)!r} to continue from")
        trainer.resume(out_dir / "last.pt")
    budget = budget_from_args(args)
    summary = trainer.fit(budget, restore_best=True)
    test = trainer.evaluate(problem.test)
    return summary, test, {"backbone": backbone, "backbone_kwargs": bkw, **model.describe()}


def run_multitask(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``mtlmeta multitask`` from parsed arguments; returns the JSON-ready result.

    Under ``torchrun`` every process trains its share of each batch; only rank 0 reads
    ``--resume``'s checkpoint, writes ``--out`` and ``--json`` and prints.
    """
    from mtl.utils import distributed as dist_utils
    from mtl.utils import resolve_device

    joined = dist_utils.launched_by_torchrun() and not dist_utils.is_distributed()
    ctx = dist_utils.init_distributed(resolve_device(args.device))
    try:
        return _run(args, ctx.device, ctx.is_main)
    finally:
        if joined:
            dist_utils.shutdown_distributed()


def _run(args: argparse.Namespace, device: Any, main: bool) -> dict[str, Any]:
    from mtl.utils import atomic_write_text, check_new_output, prepare_out_dir, seed_everything

    check_new_output(args.json, args.overwrite, what="--json")
    if args.resume and args.out is None:
        raise ConfigError("--resume needs --out DIR (the folder of the run to continue)")
    if args.train_baseline and args.baseline_json:
        raise ConfigError("give either --train-baseline or --baseline-json, not both")
    if args.train_baseline and args.arch == "single":
        raise ConfigError("--train-baseline is pointless with --arch single (it is its own baseline)")
    seed_everything(args.seed)
    arch_options = _arch_options(args)
    weighting_options = _weighting_options(args)
    baseline_record = None
    if args.baseline_json:
        path = Path(args.baseline_json)
        try:
            baseline_record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--baseline-json {str(path)!r} cannot be read: {exc}") from None
        if not isinstance(baseline_record, dict) or baseline_record.get("arch") != "single":
            raise ConfigError(f"--baseline-json {str(path)!r} is not the JSON of an 'mtlmeta multitask --arch single' "
                              "run")
    out_dir = None
    if args.out is not None and main:
        out_dir = prepare_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
        if args.overwrite and not args.resume:
            for name in RUN_FILES:  # only this command's own files, and only with --overwrite
                (out_dir / name).unlink(missing_ok=True)
    problem = _problem(args)
    progress = not args.no_progress and main
    summary, test, model_info = _train(args, problem, args.arch, arch_options, args.weighting, weighting_options,
                                       out_dir, device, args.resume and main, progress)
    metrics = {t.name: test[t.name][t.metric_name] for t in problem.tasks}
    baseline = None
    if args.arch == "single":
        baseline = {"source": "this run", "metrics": metrics}
    elif args.train_baseline:
        _, base_test, _ = _train(args, problem, "single", {}, "equal", {}, None, device, False, progress)
        baseline = {"source": "trained (--arch single, same settings)",
                    "metrics": {t.name: base_test[t.name][t.metric_name] for t in problem.tasks}}
    elif baseline_record is not None:
        if baseline_record.get("dataset", {}).get("name") != problem.name or \
                sorted(baseline_record.get("metrics", {})) != sorted(metrics):
            raise ConfigError(f"--baseline-json {args.baseline_json!r} is for dataset "
                              f"{baseline_record.get('dataset', {}).get('name')!r} with tasks "
                              f"{sorted(baseline_record.get('metrics', {}))}, not {problem.name!r} with "
                              f"{sorted(metrics)}")
        baseline = {"source": str(args.baseline_json), "metrics": baseline_record["metrics"]}
    dm = delta_m(metrics, baseline["metrics"], problem.tasks) if baseline else None
    result = {
        "command": "multitask",
        "arch": args.arch,
        "arch_options": arch_options,
        "weighting": args.weighting,
        "weighting_options": weighting_options,
        "dataset": problem.summary(),
        "model": model_info,
        "seed": args.seed,
        "device": str(device),
        "test": test,
        "metrics": metrics,
        "delta_m": dm,
        "baseline": baseline,
        "training": summary,
    }
    if not main:
        return result
    width = max(len(t.name) for t in problem.tasks)
    print(f"{args.arch} / {args.weighting} on {problem.name}: {summary['epochs']} epochs, {summary['steps']} steps, "
          f"{summary['train_seconds']:.1f}s")
    for t in problem.tasks:
        base = f"  (single-task {baseline['metrics'][t.name]:.4f})" if baseline else ""
        print(f"  {t.name:<{width}}  test {t.metric_name} {metrics[t.name]:.4f}{base}")
    print(f"  Delta-m vs single-task: {dm:+.2f}%" if dm is not None else
          "  Delta-m: n/a (add --train-baseline or --baseline-json)")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2, default=str) + "\n")
    return result


def _cmd_multitask(args: argparse.Namespace) -> int:
    run_multitask(args)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``multitask`` subcommand to the ``mtlmeta`` parser."""
    from mtl.cli import (
        add_precision_arg,
        add_training_args,
        json_object_arg,
        number_arg,
        positive_float_arg,
        positive_int_arg,
    )

    p = sub.add_parser("multitask", help="multi-task learning: hard/soft sharing, cross-stitch, MMoE, loss weighting")
    g = p.add_argument_group("problem")
    g.add_argument("--dataset", default="synthetic", choices=DATASETS,
                   help="problem to train on (default synthetic: Ma et al. 2018)")
    g.add_argument("--root", default=None, help="folder with the Omniglot zips (omniglot, multi-omniglot)")
    g.add_argument("--correlation", type=number_arg, default=None, help="synthetic: task correlation p in [-1, 1]")
    g.add_argument("--train-samples", type=positive_int_arg, default=None,
                   help="synthetic: training samples; multi-*: training pairs")
    g.add_argument("--label-fraction", type=number_arg, default=None,
                   help="keep this fraction of each task's training labels (the rest are masked)")
    g = p.add_argument_group("model")
    g.add_argument("--arch", default="hard", choices=ARCHITECTURES, help="default hard")
    g.add_argument("--backbone", default=None, help="registry name (default mlp for vectors, conv4 for images)")
    g.add_argument("--backbone-kwargs", type=json_object_arg, default={}, metavar="JSON",
                   help='backbone arguments, e.g. \'{"hidden": 32}\'')
    g.add_argument("--head-hidden", type=positive_int_arg, default=None, help="width of a hidden layer in each head")
    g.add_argument("--lambda", dest="soft_lambda", type=number_arg, default=None,
                   help="soft: L2 tie strength lambda >= 0 (default 0.01)")
    g.add_argument("--tie", default=None, choices=TIE_MODES, help="soft: pairwise or to-the-mean (default mean)")
    g.add_argument("--tied-layers", default=None, metavar="REGEX",
                   help="soft: tie parameters whose names match (default '^features\\.': the whole trunk)")
    g.add_argument("--stitch-init", type=number_arg, default=None,
                   help="crossstitch: initial self weight (default 0.9)")
    g.add_argument("--experts", type=positive_int_arg, default=None, help="mmoe: number of experts (default 4)")
    g = p.add_argument_group("loss weighting")
    g.add_argument("--weighting", default="equal", choices=WEIGHTINGS, help="default equal")
    g.add_argument("--task-weights", type=json_object_arg, default=None, metavar="JSON", help="fixed: task -> weight")
    g.add_argument("--gradnorm-alpha", type=number_arg, default=None, help="gradnorm: asymmetry alpha (default 1.5)")
    g.add_argument("--dwa-temperature", type=positive_float_arg, default=None, help="dwa: temperature (default 2)")
    g.add_argument("--cagrad-c", type=number_arg, default=None, help="cagrad: c (default 0.5)")
    g.add_argument("--mgda-normalization", default=None, choices=MGDA_NORMALIZATIONS, help="mgda (default none)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int_arg, default=10)
    g.add_argument("--batch-size", type=positive_int_arg, default=64)
    g.add_argument("--lr", type=positive_float_arg, default=1e-3, help="Adam learning rate")
    g.add_argument("--weight-decay", type=number_arg, default=0.0)
    g.add_argument("--select", default="loss", choices=SELECT_BY,
                   help="model selection on validation: mean task loss, mean metric, or last epoch (default loss)")
    g.add_argument("--log-every", type=positive_int_arg, default=None, help="add a CSV row every N steps")
    add_precision_arg(g)
    g.add_argument("--train-baseline", action="store_true",
                   help="also train the single-task baseline with the same settings, for Delta-m")
    g.add_argument("--baseline-json", default=None, metavar="PATH",
                   help="the --json of an earlier --arch single run, for Delta-m")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    add_training_args(p)
    p.set_defaults(func=_cmd_multitask)
