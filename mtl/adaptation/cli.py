"""``mtlmeta adapt``: unsupervised domain adaptation on a generated domain shift (DANN, ADDA).

Examples::

    mtlmeta adapt --dataset glyphs --methods dann,adda,target-supervised --steps 300 --json runs/adapt.json
    mtlmeta adapt --dataset omniglot --root ../shared/data/omniglot-original --shift mnistm \\
        --methods dann,adda,target-supervised --steps 1000 --translate 2 --out runs/adapt --json runs/adapt.json

The source domain is the images as drawn; the target domain is the same classes under a shift
the toolkit generates (``--shift``). Source-only always runs (the "before"); every method gets
its source and target test accuracy and the proxy A-distance between source and target test
features; with ``target-supervised`` the share of the gap each method recovers is added.
``--out DIR`` gets ``features.png`` (2-D PCA of the features before and after adaptation) and
``metrics.csv``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from mtl.adaptation.common import AdaptConfig
from mtl.adaptation.experiment import METHODS, DomainSplit, make_domain_split, run_methods
from mtl.adaptation.shifts import SHIFTS
from mtl.cli import budget_from_args
from mtl.errors import ConfigError

__all__ = ["load_adaptation_split", "register", "run_adapt"]

RUN_FILES = ("features.png", "metrics.csv")


def _methods(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    bad = [n for n in names if n not in METHODS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(METHODS)}, got {text!r}")
    return names


def load_adaptation_split(args: argparse.Namespace) -> DomainSplit:
    """The :class:`DomainSplit` for ``mtlmeta adapt``: glyphs (built in) or Omniglot (``--root``), split by drawer."""
    from mtl.cli import load_image_data

    data, _ = load_image_data(args)
    if args.classes is not None:
        if args.classes > data.num_classes:
            raise ConfigError(f"--classes {args.classes} exceeds the {data.num_classes} classes of {args.dataset}")
        data = data.with_classes(range(args.classes))
        data = type(data)(data.images, data.targets, data.class_names[:args.classes], data.attributes,
                          data.attribute_names)
    split = make_domain_split(data, args.shift, source_groups=args.source_drawers, target_groups=args.target_drawers,
                              test_groups=args.test_drawers, shift_seed=args.shift_seed)
    split.info["dataset"] = args.dataset
    return split


def run_adapt(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``mtlmeta adapt`` from parsed arguments; returns the JSON-ready result."""
    from mtl.adaptation.common import extract_features
    from mtl.adaptation.projection import plot_domain_features
    from mtl.utils import (
        CSVLogger,
        atomic_write_json,
        check_new_output,
        prepare_out_dir,
        resolve_device,
        seed_everything,
    )

    check_new_output(args.json, args.overwrite, what="--json")
    seed_everything(args.seed)
    device = resolve_device(args.device)
    config = AdaptConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, translate=args.translate,
                         log_every=max(1, args.steps // 10), seed=args.seed, progress=not args.no_progress,
                         precision=args.precision)
    config.validate()
    dann = {"gamma": args.gamma, "domain_weight": args.domain_weight, "lr_anneal": args.lr_anneal}
    adda = {} if args.adda_lr is None else {"lr": args.adda_lr}
    out_dir = prepare_out_dir(args.out, overwrite=args.overwrite) if args.out else None
    if out_dir is not None and args.overwrite:
        for name in RUN_FILES:  # only this command's own files, and only with --overwrite
            (out_dir / name).unlink(missing_ok=True)
    split = load_adaptation_split(args)
    kwargs = dict(args.backbone_kwargs)
    print(f"{split.info['dataset']} under shift {split.shift!r}: {split.info['source_train']} source / "
          f"{split.info['target_train']} target training images, {split.info['test']} test images per domain, "
          f"{split.source_train.num_classes} classes")
    budget = budget_from_args(args)
    metrics, results = run_methods(split, args.methods, backbone=args.backbone, backbone_kwargs=kwargs, config=config,
                                   dann=dann, adda=adda, device=device, budget=budget, log=print)
    before = metrics["source-only"]["a_distance"]
    for name, row in metrics.items():
        gap = row.get("gap_recovered")
        gap_text = "" if gap is None or math.isnan(gap) else f", gap recovered {100 * gap:.0f}%"
        print(f"  {name:<17} target {100 * row['target_accuracy']:5.1f}%  source {100 * row['source_accuracy']:5.1f}%  "
              f"d_A {row['a_distance']:.3f} (before {before:.3f}){gap_text}")
    out = {"command": "adapt", "data": split.info, "backbone": args.backbone, "backbone_kwargs": kwargs,
           "config": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "translate": args.translate,
                      "precision": args.precision, "dann": dann, "adda": adda},
           "seed": args.seed, "device": str(device), "a_distance_before": before, "methods": metrics,
           "histories": {name: res.history for name, res in results.items()}}
    if out_dir is not None:
        log = CSVLogger(out_dir / "metrics.csv", step_key="method")
        for name, row in metrics.items():
            log.log({"method": name, **row})
        panels = [("before: source-only", extract_features(results["source-only"].source_model,
                                                           split.source_test.images),
                   extract_features(results["source-only"].model, split.target_test.images))]
        for name in ("dann", "adda"):
            if name in results:
                panels.append((f"after: {name}", extract_features(results[name].source_model, split.source_test.images),
                               extract_features(results[name].model, split.target_test.images)))
        plot_domain_features(out_dir / "features.png", panels, seed=args.seed,
                             title=f"test features, {split.info['dataset']} -> {split.shift} (PCA)")
        print(f"wrote {out_dir / 'metrics.csv'}, {out_dir / 'features.png'}")
    if args.json:
        atomic_write_json(args.json, out)
    return out


def _cmd_adapt(args: argparse.Namespace) -> int:
    run_adapt(args)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``adapt`` subcommand (DANN, Ganin and Lempitsky 2015; ADDA, Tzeng et al. 2017)."""
    from mtl.cli import (
        add_image_data_args,
        add_precision_arg,
        add_training_args,
        int_list_arg,
        json_object_arg,
        number_arg,
        positive_float_arg,
        positive_int_arg,
    )

    p = sub.add_parser("adapt", help="unsupervised domain adaptation on a generated shift (DANN, ADDA)",
                       description=__doc__.split("\n")[0])
    g = p.add_argument_group("data")
    add_image_data_args(g, glyph_classes=20)
    g.add_argument("--classes", type=positive_int_arg, default=None, help="keep only the first N classes")
    g.add_argument("--shift", default="mnistm", choices=SHIFTS, help="the generated target domain (default mnistm)")
    g.add_argument("--shift-seed", type=int, default=0, help="seed of the generated shift (default 0)")
    g.add_argument("--source-drawers", type=int_list_arg, default=list(range(1, 9)), metavar="D,D,...",
                   help="drawers (glyphs: sample positions) of the source training set (default 1-8)")
    g.add_argument("--target-drawers", type=int_list_arg, default=list(range(9, 16)), metavar="D,D,...",
                   help="drawers of the (unlabelled) target training set (default 9-15)")
    g.add_argument("--test-drawers", type=int_list_arg, default=list(range(16, 21)), metavar="D,D,...",
                   help="drawers of the test sets, in both domains (default 16-20)")
    g = p.add_argument_group("model")
    g.add_argument("--methods", type=_methods, default=["dann"], metavar="M,M,...",
                   help=f"from {', '.join(METHODS)} (default dann; source-only always runs)")
    g.add_argument("--backbone", default="conv4", help="registry name (default conv4)")
    g.add_argument("--backbone-kwargs", type=json_object_arg, default={"hidden": 32, "num_blocks": 3}, metavar="JSON",
                   help='backbone arguments (default \'{"hidden": 32, "num_blocks": 3}\': 288 features)')
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=positive_int_arg, default=1000, help="steps per method (default 1000)")
    g.add_argument("--batch-size", type=positive_int_arg, default=64, help="per domain (default 64)")
    g.add_argument("--lr", type=positive_float_arg, default=3e-3, help="Adam learning rate (default 0.003)")
    g.add_argument("--translate", type=int, default=2, help="random translation in pixels (default 2)")
    g.add_argument("--gamma", type=number_arg, default=10.0, help="dann: schedule steepness gamma (default 10)")
    g.add_argument("--domain-weight", type=number_arg, default=1.0, help="dann: final reversal factor (default 1)")
    g.add_argument("--lr-anneal", action="store_true", help="dann: Ganin's mu_0 / (1 + 10 p)^0.75 learning rate")
    g.add_argument("--adda-lr", type=positive_float_arg, default=None, help="adda: Adam learning rate (default 2e-4)")
    add_precision_arg(g, "every method's training forward passes")
    add_training_args(p)
    p.set_defaults(func=_cmd_adapt)
