"""``mtlmeta fewshot``: train, evaluate and benchmark few-shot learners; predict on your own images.

``fewshot train`` also runs data-parallel under ``torchrun`` (the tasks of each meta-batch are
split across the processes, see :mod:`mtl.utils.distributed`)::

    torchrun --standalone --nproc_per_node 2 -m mtl.cli fewshot train --algo maml --meta-batch 16 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from meta.fewshot import ALGORITHMS, ANY_WAYS, DATASETS, FewShotConfig, load_fewshot_checkpoints, run_fewshot
from mtl.cli import (
    add_precision_arg,
    add_training_args,
    int_list_arg,
    integer_arg,
    json_object_arg,
    number_arg,
    positive_float_arg,
    positive_int_arg,
)
from mtl.errors import ConfigError
from mtl.utils import Budget, atomic_write_json, atomic_write_text, check_new_output
from mtl.utils import distributed as dist_utils


def _add_task_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tasks")
    g.add_argument("--dataset", default="glyphs", choices=DATASETS, help="default: glyphs (built in)")
    g.add_argument("--root", default=None, help="folder with the dataset files (omniglot)")
    g.add_argument("--download", action="store_true",
                   help="omniglot: fetch the official zips into --root when missing (MD5-checked)")
    g.add_argument("--backbone", default=None, help="registry name (default conv4; mlp for sinusoid)")
    g.add_argument("--backbone-kwargs", type=json_object_arg, default={}, metavar="JSON",
                   help='extra backbone arguments, e.g. \'{"hidden": 32}\'')
    g.add_argument("--glyph-classes", type=_class_counts, default=(600, 100, 200), metavar="TRAIN,VAL,TEST",
                   help="glyphs: classes per split (default 600,100,200)")
    g.add_argument("--ways", type=positive_int_arg, default=5)
    g.add_argument("--train-ways", type=positive_int_arg, default=None, help="protonet, protomaml: ways while training")
    g.add_argument("--val-ways", type=positive_int_arg, default=None,
                   help="ways of the validation tasks (default --ways; e.g. 17 when the validation split "
                        "has 17 classes and the model trains 20-way)")
    g.add_argument("--shots", type=positive_int_arg, default=1)
    g.add_argument("--queries", type=positive_int_arg, default=15)
    g.add_argument("--no-rotations", action="store_true", help="omniglot: no rotated extra classes")
    g.add_argument("--augment-shift", type=integer_arg, default=0, metavar="PIXELS",
                   help="move every training image by up to PIXELS in x and y (default 0: off)")
    g.add_argument("--augment-rotate", type=number_arg, default=0.0, metavar="DEG",
                   help="rotate every training image by up to DEG degrees (default 0: off)")
    g.add_argument("--augment-scale", type=number_arg, default=0.0, metavar="F",
                   help="stretch every training image along x and y by factors in [1-F, 1+F] (default 0: off)")
    g.add_argument("--augment-shear", type=number_arg, default=0.0, metavar="DEG",
                   help="shear every training image by up to DEG degrees (default 0: off)")
    g.add_argument("--test-tasks", type=positive_int_arg, default=600, help="test tasks (papers: 600)")
    g.add_argument("--validation-tasks", type=positive_int_arg, default=100)
    g.add_argument("--validate-every", type=positive_int_arg, default=100)
    g.add_argument("--checkpoint-every", type=positive_int_arg, default=100)
    g.add_argument("--snapshot-seconds", type=positive_float_arg, nargs="*", default=(),
                   help="also keep best_<S>s.pt, the best model within S seconds (for fixed-budget reports)")


def _step_counts(text: str) -> list[int]:
    values = int_list_arg(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 40 or 10,20,40, got {text!r}")
    return sorted(set(values))


def _class_counts(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    try:
        counts = tuple(int(p) for p in parts)
    except ValueError:
        counts = ()
    if len(counts) != 3 or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive integers TRAIN,VAL,TEST, got {text!r}")
    return counts  # type: ignore[return-value]


def _add_algo_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("algorithm")
    g.add_argument("--meta-batch", type=positive_int_arg, default=None, help="tasks per meta-update")
    g.add_argument("--inner-steps", type=positive_int_arg, default=None,
                   help="inner steps while training (default 5 for mamlpp, else 1)")
    g.add_argument("--eval-inner-steps", type=positive_int_arg, default=None, help="inner steps at test")
    g.add_argument("--inner-lr", type=positive_float_arg, default=None, help="inner-loop step size")
    g.add_argument("--meta-lr", type=positive_float_arg, default=1e-3, help="Adam learning rate (outer loop)")
    g.add_argument("--schedule", choices=("constant", "cosine", "step"), default="constant",
                   help="meta learning-rate schedule (default constant)")
    g.add_argument("--schedule-iterations", type=positive_int_arg, default=10_000, metavar="N",
                   help="cosine: decay to 0 over N iterations; step: halve every N/3 (default 10000)")
    g.add_argument("--msl-iterations", type=positive_int_arg, default=None, metavar="N",
                   help="mamlpp: anneal the multi-step loss towards the last step's over N meta-iterations "
                        "(default: a tenth of --schedule-iterations)")
    g.add_argument("--first-order-until", type=integer_arg, default=None, metavar="N",
                   help="mamlpp: first-order meta-gradients before meta-iteration N, second order after "
                        "(default: a third of --schedule-iterations; 0: second order throughout)")
    g.add_argument("--task-workers", type=positive_int_arg, default=1, metavar="N",
                   help="MAML family: run a meta-batch's tasks on N threads, --threads split between them "
                        "(faster on several cores, N task graphs in memory; default 1)")
    add_precision_arg(g, "meta-updates")


def _config(args: argparse.Namespace, algo: str) -> FewShotConfig:
    return FewShotConfig(
        algo=algo, dataset=args.dataset, root=args.root, download=args.download, backbone=args.backbone,
        backbone_kwargs=args.backbone_kwargs, glyph_classes=args.glyph_classes, ways=args.ways,
        train_ways=args.train_ways, val_ways=getattr(args, "val_ways", None), shots=args.shots,
        queries=args.queries, meta_batch=args.meta_batch,
        inner_steps=args.inner_steps, eval_inner_steps=args.eval_inner_steps, inner_lr=args.inner_lr,
        meta_lr=args.meta_lr, rotations=not args.no_rotations, validate_every=args.validate_every,
        validation_tasks=args.validation_tasks, test_tasks=args.test_tasks,
        checkpoint_every=args.checkpoint_every, snapshot_seconds=tuple(args.snapshot_seconds), seed=args.seed,
        augment_shift=args.augment_shift, augment_rotate=args.augment_rotate, augment_scale=args.augment_scale,
        augment_shear=args.augment_shear, schedule=args.schedule, schedule_iterations=args.schedule_iterations,
        init=getattr(args, "init", None), task_workers=getattr(args, "task_workers", 1),
        precision=getattr(args, "precision", "fp32"),
        pseudo_pool=getattr(args, "pseudo_pool", None), pseudo_classes=getattr(args, "pseudo_classes", None) or 0,
        pseudo_size=getattr(args, "pseudo_size", 20), pseudo_embed=getattr(args, "pseudo_embed", None),
        zero_head=getattr(args, "zero_head", False),
        msl_iterations=getattr(args, "msl_iterations", None),
        first_order_until=getattr(args, "first_order_until", None),
    )


def _budget(args: argparse.Namespace, default_seconds: float) -> Budget:
    from mtl.cli import budget_from_args

    return budget_from_args(args, default_seconds)


def _print_result(res: dict[str, Any]) -> None:
    metric = "mse" if "mse" in res else "accuracy"
    value = res[metric] * (100 if metric == "accuracy" else 1)
    ci = res["ci95"] * (100 if metric == "accuracy" else 1)
    unit = "%" if metric == "accuracy" else ""
    print(f"{res['algorithm']}: {metric} {value:.2f}{unit} +- {ci:.2f}{unit} (95% CI over "
          f"{res['test_tasks']} test tasks) after {res['meta_iterations']} meta-iterations "
          f"in {res['train_seconds']:.0f}s")


def _single_process(command: str) -> None:
    if dist_utils.launched_by_torchrun():
        raise ConfigError(f"fewshot {command} runs in one process; start it without torchrun "
                          "(only 'fewshot train' runs distributed)")


def _cmd_train(args: argparse.Namespace) -> int:
    from mtl.utils import resolve_device

    if args.out is None and args.resume:
        raise ConfigError("--resume needs --out DIR (the folder of the run to continue)")
    config, budget = _config(args, args.algo), _budget(args, 600.0)
    joined = dist_utils.launched_by_torchrun() and not dist_utils.is_distributed()
    ctx = dist_utils.init_distributed(resolve_device(args.device))
    try:
        main = ctx.is_main  # only rank 0 reads --resume's checkpoint and writes; the others get its state
        res = run_fewshot(
            config, budget, out_dir=args.out if main else None, json_path=args.json if main else None,
            device=str(ctx.device), resume=args.resume and main, overwrite=args.overwrite,
            progress=not args.no_progress and main, log=print if main else (lambda _msg: None),
        )
        if main:
            _print_result(res)
    finally:
        if joined:
            dist_utils.shutdown_distributed()
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from meta.pretrain import pretrain_classifier

    _single_process("pretrain")
    if args.dataset == "sinusoid":
        raise ConfigError("classifier pre-training needs an image dataset; 'sinusoid' is a regression task")
    res = pretrain_classifier(_config(args, "protonet"), _budget(args, 600.0), out_dir=args.out, json_path=args.json,
                              batch_size=args.batch_size, lr=args.lr, device=args.device, overwrite=args.overwrite,
                              progress=not args.no_progress)
    print(f"pretrain: {res['ways']}-way {res['shots']}-shot nearest-prototype accuracy {100 * res['accuracy']:.2f}% "
          f"+- {100 * res['ci95']:.2f}% (95% CI over {res['test_tasks']} test tasks) after {res['steps']} steps "
          f"in {res['train_seconds']:.0f}s; best validation {100 * res['val_accuracy']:.2f}% at step "
          f"{res['best_step']}" + (f"; trunk in {res['checkpoint']}" if res["checkpoint"] else ""))
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from meta.benchmark import run_benchmark

    _single_process("benchmark")
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    if not algos:
        raise ConfigError(f"--algos needs at least one algorithm ({', '.join(ALGORITHMS)}), got {args.algos!r}")
    for a in algos:
        if a not in ALGORITHMS:
            raise ConfigError(f"--algos: unknown algorithm {a!r}; choose from {', '.join(ALGORITHMS)}")
    run_benchmark(args, algos, [_config(args, a) for a in algos])
    return 0


def _load_checkpoints(paths: list[str], device: Any) -> Any:
    """``--checkpoint``: one checkpoint of any algorithm, or several ProtoNets used as one ensemble."""
    if len(paths) > 1:
        print(f"ensemble of {len(paths)} ProtoNet checkpoints: their embeddings concatenated "
              "(logits summed)", file=sys.stderr)
    return load_fewshot_checkpoints(paths, device)


def _checkpoint_record(paths: list[str]) -> str | list[str]:
    return str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from meta.evaluation import confused_pairs, evaluate
    from meta.fewshot import TaskSources
    from meta.protonet import check_shrinkage, check_transductive_steps
    from mtl.data.augment import check_test_rotate
    from mtl.utils import resolve_device

    _single_process("evaluate")
    check_new_output(args.json, args.overwrite, what="--json")
    device = resolve_device(args.device)
    cfg, algo, _ = _load_checkpoints(args.checkpoint, device)
    changes = {k: getattr(args, k) for k in ("ways", "shots", "queries", "root") if getattr(args, k) is not None}
    at_steps = args.eval_inner_steps
    if at_steps is not None:
        if not hasattr(algo, "eval_inner_steps"):
            raise ConfigError(f"--eval-inner-steps: {cfg.algo} has no inner steps (only the MAML family and "
                              "reptile adapt by gradient steps)")
        changes["eval_inner_steps"] = algo.eval_inner_steps = max(at_steps)
    if "ways" in changes and changes["ways"] != cfg.ways and cfg.algo not in ANY_WAYS:
        raise ConfigError(f"this {cfg.algo} model was meta-trained {cfg.ways}-way; it cannot be tested "
                          f"{changes['ways']}-way (only {' and '.join(ANY_WAYS)} can)")
    if cfg.algo == "protonet":
        changes["train_ways"] = changes.get("ways", cfg.ways)
    test_cfg = replace(cfg.resolved(), **changes, test_tasks=args.test_tasks)
    for option, value in (("--test-shift", args.test_shift), ("--test-rotate", args.test_rotate)):
        if value and not hasattr(algo, "test_shift"):
            raise ConfigError(f"{option} needs protonet or the MAML family (test-time views of the images); "
                              f"this checkpoint is {cfg.algo}")
    if args.transductive_steps and cfg.algo != "protonet":
        raise ConfigError(f"--transductive-steps refines ProtoNet prototypes; this checkpoint is {cfg.algo}")
    if hasattr(algo, "test_shift"):
        algo.test_shift, algo.test_rotate = args.test_shift, check_test_rotate(args.test_rotate)
    if cfg.algo == "protonet":
        algo.transductive_steps = check_transductive_steps(args.transductive_steps)
    if args.mahalanobis is not None:
        if cfg.algo != "protonet":
            raise ConfigError(f"--mahalanobis is a ProtoNet distance; this checkpoint is {cfg.algo}")
        check_shrinkage(args.mahalanobis)
    if args.confusions and test_cfg.is_regression:
        raise ConfigError("--confusions needs a classifier; this checkpoint is a sinusoid regressor")
    if args.split == "val":
        test_cfg = replace(test_cfg, val_ways=test_cfg.ways if "ways" in changes else test_cfg.val_ways)
        tasks = TaskSources(test_cfg, device, validation_only=True)
    else:
        tasks = TaskSources(test_cfg, device, test_only=True)
    source = tasks.val if args.split == "val" else tasks.test
    metric_note = _fit_mahalanobis(algo, tasks, args) if args.mahalanobis is not None else None
    ways = test_cfg.val_ways if args.split == "val" else test_cfg.ways
    several = at_steps is not None and len(at_steps) > 1
    result = evaluate(algo, source, num_tasks=args.test_tasks, progress=not args.no_progress,
                      desc=f"{args.split} tasks", at_steps=at_steps if several else None, workers=args.task_workers)
    res = {"algorithm": cfg.algo, "dataset": test_cfg.dataset, "backbone": test_cfg.backbone,
           "ways": ways, "shots": test_cfg.shots, "queries": test_cfg.queries,
           "test_tasks": int(result["num_tasks"]), "ci95": result["ci95"],
           "tasks_per_second": result["tasks_per_second"], "checkpoint": _checkpoint_record(args.checkpoint),
           "split": tasks.note, "classes": args.split, "meta_iterations": None, "train_seconds": 0.0,
           "test_shift": args.test_shift, "test_rotate": args.test_rotate,
           "transductive_steps": args.transductive_steps, "mahalanobis": metric_note}
    metric = "mse" if test_cfg.is_regression else "accuracy"
    res[metric] = result.get(metric, result.get("loss"))
    scale, unit = (1, "") if metric == "mse" else (100, "%")
    tta = f", test-time shifts up to {args.test_shift} px" if args.test_shift else ""
    tta += f", test-time rotations of +-{args.test_rotate:g} degrees" if args.test_rotate else ""
    if metric_note is not None:
        tta += f", Mahalanobis distance (shrinkage {args.mahalanobis:g})"
    if args.transductive_steps:
        tta += f", transductive: {args.transductive_steps} soft k-means step{'s' * (args.transductive_steps > 1)}"
    steps_note = f", {algo.eval_inner_steps} inner steps" if hasattr(algo, "eval_inner_steps") else ""
    print(f"{cfg.algo} {ways}-way {test_cfg.shots}-shot: {metric} {res[metric] * scale:.2f}{unit} "
          f"+- {res['ci95'] * scale:.2f}{unit} (95% CI over {res['test_tasks']} {args.split} tasks{tta}{steps_note})")
    if hasattr(algo, "eval_inner_steps"):
        res["eval_inner_steps"] = algo.eval_inner_steps
    if several:
        res["by_steps"] = [{"steps": k, metric: result[f"{metric}@{k}"], "ci95": result[f"ci95@{k}"]}
                           for k in at_steps]
        for row in res["by_steps"]:
            print(f"  after {row['steps']:>3} steps: {metric} {row[metric] * scale:.2f}{unit} "
                  f"+- {row['ci95'] * scale:.2f}{unit}")
    if args.confusions:
        conf = confused_pairs(algo, source, num_tasks=args.test_tasks, class_names=tasks.class_names,
                              top=args.confusions, progress=not args.no_progress)
        res["confusions"] = conf
        print(f"errors: {conf['errors']} of {conf['queries']} queries; most confused class pairs:")
        for row in conf["pairs"]:
            print(f"  {row['a']} <-> {row['b']}: {row['errors']} ({100 * row['share']:.1f}% of errors)")
    if args.json:
        atomic_write_json(args.json, res)
    return 0


def _fit_mahalanobis(algo: Any, tasks: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``--mahalanobis``: fit the ProtoNet's whitening on K images of every training class."""
    import time

    data, classes = tasks.data, tasks.splits["train"]
    g = torch.Generator().manual_seed(0)
    picked = []
    for c in classes:
        members = torch.nonzero(data.targets == c).flatten()
        picked.append(members[torch.randperm(len(members), generator=g)[:args.mahalanobis_images]])
    index = torch.cat(picked)
    start = time.process_time()
    algo.fit_whitening(data.images[index].to(tasks.device), data.targets[index], args.mahalanobis)
    seconds = time.process_time() - start
    print(f"Mahalanobis distance: within-class covariance of {len(index)} training images ({len(classes)} classes), "
          f"shrinkage {args.mahalanobis:g}, {seconds:.1f} CPU-seconds", file=sys.stderr)
    return {"shrinkage": args.mahalanobis, "images": len(index), "classes": len(classes), "cpu_seconds": seconds}


def _cmd_predict(args: argparse.Namespace) -> int:
    from meta.images import load_query_folder, load_support_folder

    _single_process("predict")
    check_new_output(args.json, args.overwrite, what="--json")
    cfg, algo, image_shape = _load_checkpoints(args.checkpoint, "cpu")
    if cfg.dataset == "sinusoid" or image_shape is None:
        raise ConfigError("predict works on image classifiers; this checkpoint is a sinusoid regressor")
    algo.eval()
    support_x, support_y, class_names = load_support_folder(args.support, image_shape, args.invert)
    query_x, query_names = load_query_folder(args.query, image_shape, args.invert)
    n = len(class_names)
    if cfg.algo not in ANY_WAYS and n != cfg.ways:
        raise ConfigError(
            f"this {cfg.algo} model was meta-trained {cfg.ways}-way, but --support has {n} classes; "
            f"give {cfg.ways} class folders or use a {' or '.join(ANY_WAYS)} checkpoint (any number of classes)"
        )
    with torch.enable_grad():
        predictor = algo.adapt(support_x, support_y)
    with torch.no_grad():
        probs = torch.softmax(predictor(query_x), dim=-1)
    conf, pred = probs.max(dim=-1)
    rows = [{"file": f, "class": class_names[int(c)], "probability": round(float(p), 4)}
            for f, c, p in zip(query_names, pred, conf)]
    width = max(len(r["file"]) for r in rows)
    for r in rows:
        print(f"{r['file']:<{width}}  {r['class']}  {r['probability']:.3f}")
    if args.json:
        atomic_write_text(args.json, json.dumps({"checkpoint": _checkpoint_record(args.checkpoint),
                                                 "classes": class_names,
                                                 "predictions": rows}, indent=2) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fewshot`` with its ``train``, ``benchmark`` and ``predict`` subcommands."""
    fs = sub.add_parser("fewshot", help="few-shot learning: MAML family and ProtoNets")
    fsub = fs.add_subparsers(dest="fewshot_command", metavar="ACTION", parser_class=type(fs))
    fsub.required = True

    t = fsub.add_parser("train", help="meta-train one algorithm, then test on 600 held-out tasks")
    t.add_argument("--algo", default="maml", choices=list(ALGORITHMS))
    _add_task_args(t)
    _add_algo_args(t)
    add_training_args(t)
    t.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    t.add_argument("--init", default=None, metavar="CKPT",
                   help="start from these weights: 'fewshot pretrain' backbone.pt, a transfer checkpoint, "
                        "a state dict or safetensors file (tensors of another shape, e.g. a head, are skipped)")
    t.add_argument("--zero-head", action="store_true",
                   help="MAML family: start the meta-learned head at zero (after --init), the same for "
                        "every class (Ye & Chao 2022); one inner step then gives a dot-product prototype head")
    ps = t.add_argument_group("pseudo-classes (extra training classes from unlabelled images)")
    ps.add_argument("--pseudo-pool", default=None, nargs="+", metavar="PATH",
                    help="unlabelled images: .png sprite sheets of 28x28 tiles (e.g. omniglot28/"
                         "images_evaluation.png) or folders; clustered into extra training classes "
                         "(for omniglot, copies of the labelled images are removed first)")
    ps.add_argument("--pseudo-classes", type=positive_int_arg, default=None, metavar="K",
                    help="k-means clusters of the pool (needs --pseudo-pool)")
    ps.add_argument("--pseudo-size", type=positive_int_arg, default=20, metavar="N",
                    help="images kept per cluster, those nearest its centre (default 20)")
    ps.add_argument("--pseudo-embed", default=None, metavar="CKPT",
                    help="checkpoint whose network embeds the pool (default: --init)")
    t.set_defaults(func=_cmd_train)

    pre = fsub.add_parser("pretrain", help="train the backbone as a classifier of all training classes "
                                          "(a few-shot embedding, and a start for 'train --init')")
    _add_task_args(pre)
    add_training_args(pre)
    pre.add_argument("--batch-size", type=positive_int_arg, default=128, help="images per step (default 128)")
    pre.add_argument("--lr", type=positive_float_arg, default=1e-3,
                     help="Adam learning rate, decayed to 0 by a cosine over the budget (default 1e-3)")
    add_precision_arg(pre)
    pre.set_defaults(func=_cmd_pretrain, meta_batch=None, inner_steps=None, eval_inner_steps=None, inner_lr=None,
                     meta_lr=1e-3, schedule="constant", schedule_iterations=10_000)

    b = fsub.add_parser("benchmark", help="train and test several algorithms side by side: table and plot")
    b.add_argument("--algos", default="protonet,maml,fomaml,anil", help="comma-separated algorithms")
    _add_task_args(b)
    _add_algo_args(b)
    add_training_args(b)
    b.set_defaults(func=_cmd_benchmark)

    e = fsub.add_parser("evaluate", help="test a trained checkpoint on held-out tasks (other ways/shots too)")
    e.add_argument("--checkpoint", required=True, nargs="+", metavar="PATH",
                   help="best.pt or last.pt of 'fewshot train'; several ProtoNet checkpoints are tested as "
                        "one ensemble (embeddings concatenated: the members' logits summed)")
    e.add_argument("--ways", type=positive_int_arg, default=None, help="default: as trained")
    e.add_argument("--shots", type=positive_int_arg, default=None, help="default: as trained")
    e.add_argument("--queries", type=positive_int_arg, default=None, help="default: as trained")
    e.add_argument("--eval-inner-steps", type=_step_counts, default=None, metavar="S[,S...]",
                   help="inner steps at test (default: as trained); several, e.g. 10,20,40, report the "
                        "accuracy after each from one adaptation per task (the largest is the headline)")
    e.add_argument("--root", default=None, help="dataset folder, if it moved since training")
    e.add_argument("--test-tasks", type=positive_int_arg, default=600)
    e.add_argument("--split", default="test", choices=("test", "val"),
                   help="val: the validation classes instead (to choose test-time settings such as "
                        "--eval-inner-steps without looking at the test classes; default test)")
    e.add_argument("--confusions", type=positive_int_arg, default=None, metavar="K",
                   help="also list the K class pairs confused most often over the same tasks")
    e.add_argument("--test-shift", type=integer_arg, default=0, choices=range(5), metavar="P",
                   help="test-time augmentation: protonet embeds every test image as the mean of its copies "
                        "shifted by up to P pixels; the MAML family averages its query outputs over such "
                        "copies of the queries after adapting ((2P+1)^2 times the work; default 0: off)")
    e.add_argument("--test-rotate", type=number_arg, default=0.0, metavar="DEG",
                   help="also the copies rotated by -DEG and +DEG degrees (with --test-shift, of every "
                        "shifted copy; 3 times the work; 0..45, default 0: off)")
    e.add_argument("--transductive-steps", type=integer_arg, default=0, metavar="N",
                   help="protonet: refine the prototypes with each task's queries by N soft k-means steps "
                        "(Ren et al. 2018) before classifying them: a transductive test, not the paper's "
                        "(0..100, default 0: off)")
    e.add_argument("--mahalanobis", type=number_arg, default=None, metavar="LAMBDA",
                   help="protonet: squared Mahalanobis instead of Euclidean distances, with the within-class "
                        "covariance of the training classes' images (embedded with the test-time views) shrunk "
                        "by LAMBDA in [0, 1] towards a multiple of the identity (default: off)")
    e.add_argument("--mahalanobis-images", type=positive_int_arg, default=5, metavar="K",
                   help="training images per class for that covariance (a fixed random choice; default 5)")
    e.add_argument("--task-workers", type=positive_int_arg, default=1, metavar="N",
                   help="adapt N test tasks at a time, each on a thread of its own with --threads/N intra-op "
                        "threads (at least 1): faster on several cores, the results of one worker (the MAML "
                        "family and Reptile; ProtoNets, tested in seconds, use one; default 1)")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    e.add_argument("--json", default=None, metavar="PATH")
    e.add_argument("--overwrite", action="store_true")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--threads", type=positive_int_arg, default=None)
    e.set_defaults(func=_cmd_evaluate)

    p = fsub.add_parser("predict", help="adapt a trained model to your support folder; label your queries")
    p.add_argument("--checkpoint", required=True, nargs="+", metavar="PATH",
                   help="best.pt or last.pt of 'fewshot train'; several ProtoNet checkpoints act as one "
                        "ensemble (as in 'fewshot evaluate')")
    p.add_argument("--support", required=True, help="folder with one sub-folder of images per class")
    p.add_argument("--query", required=True, help="folder of query images")
    p.add_argument("--invert", default="auto", choices=("auto", "yes", "no"),
                   help="turn dark-on-light images into bright strokes on dark (default auto)")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_predict)

