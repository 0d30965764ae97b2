"""``mtlmeta transfer``: pre-train on a source, transfer to a target, advise on a strategy, inspect checkpoints.

Examples::

    mtlmeta transfer run --dataset glyphs --source inverted --shots 1 --strategy auto --json runs/t.json
    mtlmeta transfer run --dataset omniglot --root ../shared/data/omniglot-original --save-source runs/src.pt
    mtlmeta transfer run --dataset omniglot --root ... --init runs/src.pt --restore '^features\\.block[12]\\.' \\
        --strategy partial:block3
    mtlmeta transfer advise --per-class 10 --distance 0.4 --json runs/advice.json
    mtlmeta transfer advise --per-class 1 --distance 1.6 --rule four_regimes
    mtlmeta transfer inspect runs/src.pt --pattern 'block1'
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from mtl.errors import ConfigError

__all__ = ["register", "run_advise", "run_inspect", "run_transfer"]


def _write_json(path: str | None, result: dict[str, Any]) -> None:
    if path:
        from mtl.utils import atomic_write_text

        atomic_write_text(path, json.dumps(result, indent=2, default=str) + "\n")


def _backbone_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = {"hidden": args.hidden} if args.backbone == "conv4" else {}
    if args.backbone == "mlp":
        kwargs = {"in_features": 784, "hidden": [256, 128]}
    kwargs.update(args.backbone_kwargs)
    return kwargs


def run_transfer(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``mtlmeta transfer run``: source model (trained or restored), advice, fine-tune, test accuracy."""
    from mtl.backbones import create_backbone
    from mtl.training import evaluate_classifier, train_classifier
    from mtl.transfer import (
        FineTuneRecipe,
        Strategy,
        advise,
        fine_tune,
        load_partial,
        measure_distance,
        save_named_checkpoint,
        trunk_layers,
    )
    from mtl.transfer.checkpoints import check_init_backbone, read_named_checkpoint
    from mtl.transfer.problems import make_transfer_problem
    from mtl.transfer.regimes import distance_extractor, get_rule
    from mtl.utils import check_new_output, resolve_device, seed_everything

    check_new_output(args.json, args.overwrite, what="--json")
    check_new_output(args.save_source, args.overwrite, what="--save-source")
    if args.init and args.save_source:
        raise ConfigError("give --init (restore a source model) or --save-source (train and save one), not both")
    if args.restore and not args.init:
        raise ConfigError("--restore needs --init PATH (the checkpoint to restore from)")
    if args.distance is not None and not 0 <= args.distance <= 2:
        raise ConfigError(f"--distance must be a proxy A-distance in [0, 2], got {args.distance!r}")
    seed_everything(args.seed)
    device = resolve_device(args.device)
    problem = make_transfer_problem(args.dataset, source=args.source, shots=args.shots, root=args.root,
                                    seed=args.seed, source_classes=args.source_classes,
                                    target_classes=args.target_classes)
    kwargs = _backbone_kwargs(args)
    model = create_backbone(args.backbone, num_classes=problem.source.num_classes, **kwargs)
    progress = not args.no_progress
    restore_report = None
    start = time.perf_counter()
    if args.init:
        init = read_named_checkpoint(args.init)
        check_init_backbone(model, init)
        restore_report = load_partial(model, init, args.restore or r"^features\.",
                                      on_shape_mismatch="skip" if args.restore is None else "error")
        print(f"restored from {args.init}: {restore_report.summary()}")
        source_info: dict[str, Any] = {"restored_from": args.init, "restore": restore_report.as_dict()}
    else:
        history = train_classifier(model, problem.source, epochs=args.source_epochs, batch_size=args.batch_size,
                                   lr=args.source_lr, seed=args.seed, device=device, progress=progress,
                                   desc="source", precision=args.precision)
        source_info = {"epochs": args.source_epochs, "final_loss": history.train_loss[-1],
                       "seconds": history.seconds}
        if args.save_source:
            save_named_checkpoint(args.save_source, model, overwrite=args.overwrite,
                                  extra={"source": problem.info})
            source_info["saved_to"] = args.save_source
    layers = trunk_layers(model)
    distance = args.distance
    distance_source = "given"
    measure = get_rule(args.rule).measure
    if distance is None:
        distance = measure_distance(distance_extractor(model, measure), problem.source.images, problem.target_pool,
                                    seed=args.seed)
        distance_source = f"measured: proxy A-distance on {measure} (source model; target: unlabelled pool)"
    per_class = len(problem.target_train) / problem.target_train.num_classes
    advice = advise(per_class, distance, layers, rule=args.rule, small_below=args.small_below,
                    different_above=args.different_above)
    strategy = advice.strategy if args.strategy == "auto" else Strategy.parse(args.strategy)
    print(f"advice: {advice.strategy} ({advice.reason}); running {strategy}")
    recipe = FineTuneRecipe(epochs=args.epochs, lr=args.lr, step_size=args.step_size, gamma=args.gamma,
                            batch_size=args.batch_size, layer_decay=args.layer_decay, precision=args.precision)
    result_ft = fine_tune(model, problem.target_train, strategy, recipe=recipe, seed=args.seed, device=device,
                          progress=progress)
    test = evaluate_classifier(model, problem.target_test, device=device)
    print(f"{strategy} on {problem.info['target_classes']} target classes, {args.shots} per class: "
          f"test accuracy {100 * test['accuracy']:.1f}% ({time.perf_counter() - start:.1f}s)")
    result = {
        "command": "transfer run",
        "problem": problem.info,
        "backbone": args.backbone,
        "backbone_kwargs": kwargs,
        "source_model": source_info,
        "distance": {"value": distance, "measure": measure, "source": distance_source},
        "advice": advice.as_dict(),
        "strategy": str(strategy),
        "recipe": vars(recipe),
        "fine_tune": result_ft.as_dict(),
        "test": test,
        "seed": args.seed,
        "device": str(device),
        "seconds": time.perf_counter() - start,
    }
    _write_json(args.json, result)
    return result


def run_advise(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``mtlmeta transfer advise``: the four-regime advice for given numbers."""
    from mtl.backbones import create_backbone
    from mtl.transfer import advise, trunk_layers
    from mtl.utils import check_new_output

    check_new_output(args.json, args.overwrite, what="--json")
    model = create_backbone(args.backbone, **_backbone_kwargs(args))
    advice = advise(args.per_class, args.distance, trunk_layers(model), rule=args.rule, small_below=args.small_below,
                    different_above=args.different_above)
    print(f"{advice.strategy}  [{advice.regime}]  {advice.reason}")
    result = {"command": "transfer advise", **advice.as_dict()}
    _write_json(args.json, result)
    return result


def run_inspect(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``mtlmeta transfer inspect``: a checkpoint's metadata and tensor names and shapes."""
    from mtl.transfer import read_named_checkpoint
    from mtl.transfer.freezing import _compile
    from mtl.utils import check_new_output

    check_new_output(args.json, args.overwrite, what="--json")
    ckpt = read_named_checkpoint(args.path)
    regex: re.Pattern[str] = _compile(args.pattern)
    tensors = {n: list(t.shape) for n, t in ckpt.state_dict.items() if regex.search(n)}
    if not tensors:
        raise ConfigError(f"--pattern {args.pattern!r} matches no tensor of {args.path!r}; names look like: "
                          + ", ".join(list(ckpt.state_dict)[:6]))
    print(json.dumps(ckpt.metadata, indent=2))
    for name, shape in tensors.items():
        print(f"  {name}  {'x'.join(map(str, shape)) or 'scalar'}")
    result = {"command": "transfer inspect", "path": args.path, "metadata": ckpt.metadata, "tensors": tensors}
    _write_json(args.json, result)
    return result


def _strategy_arg(text: str) -> str:
    from mtl.transfer import Strategy

    if text == "auto":
        return text
    try:
        Strategy.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``transfer`` subcommand (``run``, ``advise``, ``inspect``) to the ``mtlmeta`` parser."""
    from mtl.cli import add_precision_arg, add_training_args, json_object_arg, positive_float_arg, positive_int_arg

    p = sub.add_parser("transfer", help="transfer learning: fine-tuning strategies, partial restore, advice")
    tsub = p.add_subparsers(dest="transfer_command", metavar="ACTION", parser_class=type(p))
    tsub.required = True

    def model_args(q: argparse.ArgumentParser) -> None:
        g = q.add_argument_group("model")
        g.add_argument("--backbone", default="conv4", choices=("conv4", "mlp", "resnet12"),
                       help="registry backbone (default conv4)")
        g.add_argument("--hidden", type=positive_int_arg, default=32, help="conv4 width (default 32)")
        g.add_argument("--backbone-kwargs", type=json_object_arg, default={}, metavar="JSON",
                       help='more backbone arguments, e.g. \'{"num_blocks": 3}\'')

    def advisor_args(q: argparse.ArgumentParser) -> None:
        from mtl.transfer.regimes import DEFAULT_RULE, RULES

        g = q.add_argument_group("advisor")
        g.add_argument("--rule", default=DEFAULT_RULE, choices=tuple(RULES),
                       help=f"decision table (default {DEFAULT_RULE}; four_regimes: the seed's uncalibrated rule); "
                            "it also says where the distance is measured")
        g.add_argument("--small-below", type=positive_float_arg, default=None,
                       help="override the rule's: fewer target examples per class than this is 'little data'")
        g.add_argument("--different-above", type=float, default=None,
                       help="override the rule's: a proxy A-distance above this is a 'different' source")

    q = tsub.add_parser("run", help="pre-train (or restore) a source model, then fine-tune on the target")
    g = q.add_argument_group("problem")
    g.add_argument("--dataset", default="glyphs", choices=("glyphs", "omniglot"))
    g.add_argument("--root", default=None, help="omniglot: folder with images_background_small{1,2}.zip")
    g.add_argument("--source", default="near", choices=("near", "inverted", "glyphs"),
                   help="near: other characters; inverted: them with inverted contrast; glyphs: procedural (omniglot)")
    g.add_argument("--shots", type=positive_int_arg, default=5, help="labelled target drawings per class (1-10)")
    g.add_argument("--source-classes", type=positive_int_arg, default=None,
                   help="use only this many source classes (default: glyphs 60, omniglot all 175)")
    g.add_argument("--target-classes", type=positive_int_arg, default=None,
                   help="use only this many target classes (default: glyphs 20, omniglot all 50)")
    model_args(q)
    g = q.add_argument_group("source model")
    g.add_argument("--init", default=None, metavar="PATH", help="restore the source model from this checkpoint")
    g.add_argument("--restore", default=None, metavar="REGEX",
                   help="with --init: restore only tensors whose names match (default '^features\\.', the trunk)")
    g.add_argument("--save-source", default=None, metavar="PATH", help="save the trained source model here")
    g.add_argument("--source-epochs", type=positive_int_arg, default=5)
    g.add_argument("--source-lr", type=positive_float_arg, default=3e-3, help="Adam rate for source training")
    g = q.add_argument_group("fine-tuning")
    g.add_argument("--strategy", type=_strategy_arg, default="auto",
                   help="auto (the advisor), linear_probe, full or partial:LAYER (default auto)")
    g.add_argument("--distance", type=float, default=None,
                   help="source/target proxy A-distance to advise with (default: measured where --rule says)")
    g.add_argument("--epochs", type=positive_int_arg, default=15)
    g.add_argument("--lr", type=positive_float_arg, default=0.01, help="SGD rate (momentum 0.9)")
    g.add_argument("--step-size", type=positive_int_arg, default=7, help="StepLR step (epochs, default 7)")
    g.add_argument("--gamma", type=positive_float_arg, default=0.1, help="StepLR factor (default 0.1)")
    g.add_argument("--layer-decay", type=positive_float_arg, default=None,
                   help="discriminative rates: divide by this per layer downward (ULMFiT uses 2.6)")
    g.add_argument("--batch-size", type=positive_int_arg, default=32)
    add_precision_arg(g, "source training and fine-tuning forward passes")
    advisor_args(q)
    add_training_args(q)
    q.set_defaults(func=lambda a: run_transfer(a) and 0)

    q = tsub.add_parser("advise", help="recommend linear probe, partial or full fine-tuning")
    q.add_argument("--per-class", type=positive_float_arg, required=True, help="labelled target examples per class")
    q.add_argument("--distance", type=float, required=True,
                   help="source/target proxy A-distance in [0, 2], measured where --rule says (calibrated: raw pixels)")
    model_args(q)
    advisor_args(q)
    q.add_argument("--json", default=None, metavar="PATH", help="write the advice here")
    q.add_argument("--overwrite", action="store_true", help="allow replacing --json")
    q.set_defaults(func=lambda a: run_advise(a) and 0)

    q = tsub.add_parser("inspect", help="show a checkpoint's metadata and tensors")
    q.add_argument("path", help="checkpoint (.pt or .safetensors)")
    q.add_argument("--pattern", default=".*", help="only tensors whose names match this regular expression")
    q.add_argument("--json", default=None, metavar="PATH", help="write the listing here")
    q.add_argument("--overwrite", action="store_true", help="allow replacing --json")
    q.set_defaults(func=lambda a: run_inspect(a) and 0)
