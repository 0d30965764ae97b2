"""``mtlmeta affinity``: measure task affinities (TAG or a transfer matrix), suggest groups, compare them.

Examples::

    mtlmeta affinity --dataset correlated --method tag --groups 2 --json runs/aff.json --plot runs/aff.png
    mtlmeta affinity --dataset correlated --method transfer --target-samples 200 --json runs/tm.json
    mtlmeta affinity --dataset omniglot-sides --root ../shared/data/omniglot-original --compare --json runs/o.json

The JSON holds the affinity matrix (rows: source task, columns: affected task), the task pairs
ranked by mutual affinity, the best split into ``--groups`` groups and, with ``--compare``, the
test metrics of that split against all tasks in one hard-shared network.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from mtl.affinity.grouping import rank_groupings
from mtl.affinity.problems import AFFINITY_DATASETS, default_backbone, load_affinity_problem
from mtl.errors import ConfigError

__all__ = ["register", "run_affinity"]

METHODS = ("tag", "transfer")


def _problem(args: argparse.Namespace) -> Any:
    opts: dict[str, Any] = {"seed": args.seed}
    if args.correlations is not None and args.dataset != "correlated":
        raise ConfigError(f"--correlations applies to --dataset correlated only, not {args.dataset!r}")
    if args.dataset in ("correlated", "synthetic"):
        if args.correlations is not None:
            opts["correlations"] = args.correlations
        if args.train_samples:
            opts["num_train"] = args.train_samples
    elif args.dataset in ("omniglot-sides", "glyph-sides", "multi-glyphs", "multi-omniglot"):
        if args.train_samples:
            opts["sizes"] = (args.train_samples, max(200, args.train_samples // 6),
                             max(400, args.train_samples // 3))
    elif args.train_samples:
        raise ConfigError(f"--train-samples does not apply to --dataset {args.dataset!r}")
    return load_affinity_problem(args.dataset, root=args.root, **opts)


def _correlations_arg(text: str) -> list[list[float]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON matrix such as [[1, 0.5], [0.5, 1]], got {text!r} "
                                         f"({exc.msg})") from None
    if not (isinstance(value, list) and all(isinstance(r, list) for r in value)):
        raise argparse.ArgumentTypeError(f"expected a JSON list of lists, got {text!r}")
    return value


def run_affinity(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``mtlmeta affinity`` from parsed arguments; returns the JSON-ready result."""
    from mtl.affinity.group_training import train_groups
    from mtl.affinity.plots import plot_affinity
    from mtl.affinity.tag import tag_affinity
    from mtl.affinity.transfer_matrix import TransferConfig, transfer_matrix
    from mtl.multitask.trainer import MultiTaskConfig
    from mtl.utils import atomic_write_text, check_new_output, resolve_device, seed_everything

    check_new_output(args.json, args.overwrite, what="--json")
    check_new_output(args.plot, args.overwrite, what="--plot")
    if args.method != "tag" and (args.every != 1 or args.lookahead_lr is not None):
        raise ConfigError("--every and --lookahead-lr apply to --method tag only")
    seed_everything(args.seed)
    device = resolve_device(args.device)
    problem = _problem(args)
    names = [t.name for t in problem.tasks]
    if not 1 <= args.groups <= len(names):
        raise ConfigError(f"--groups must be in 1..{len(names)} (the number of tasks of {problem.name}), "
                          f"got {args.groups}")
    backbone, bkw = default_backbone(problem, args.backbone, args.backbone_kwargs)
    progress = not args.no_progress
    train_cfg = MultiTaskConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                progress=progress)
    measured: dict[str, Any]
    if args.method == "tag":
        affinity, summary = tag_affinity(problem, backbone, bkw, train_cfg, args.head_hidden, args.every,
                                         args.lookahead_lr, device)
        measured = {"training": {k: summary[k] for k in ("epochs", "steps", "train_seconds")}}
    else:
        tm = transfer_matrix(problem, backbone, bkw, TransferConfig(
            source_epochs=args.epochs, target_samples=args.target_samples, val_samples=args.val_samples,
            target_epochs=args.target_epochs, batch_size=args.batch_size, lr=args.lr, head_hidden=args.head_hidden,
            seed=args.seed, progress=progress), device)
        affinity = tm.affinity()
        measured = {"transfer": tm.to_dict()}
    ranked = rank_groupings(affinity.matrix, names, args.groups)
    best = ranked[0]
    result: dict[str, Any] = {
        "command": "affinity",
        "method": args.method,
        "dataset": problem.summary(),
        "backbone": backbone,
        "backbone_kwargs": bkw,
        "seed": args.seed,
        "device": str(device),
        "affinity": affinity.to_dict(),
        "grouping": {"k": args.groups, "best": best.to_dict(), "ranking": [g.to_dict() for g in ranked[:10]]},
        **measured,
    }
    width = max(len(n) for n in names)
    print(f"{args.method} affinity on {problem.name} ({backbone}); rows: source task, columns: affected task")
    print(" " * (width + 2) + "  ".join(f"{n[:9]:>9}" for n in names))
    for name, row in zip(names, affinity.matrix):
        print(f"  {name:<{width}}" + "  ".join(f"{v:>9.3g}" if math.isfinite(v) else f"{'n/a':>9}" for v in row))
    print("  pairs by mutual affinity: " + ", ".join(f"{a}~{b} {v:.3g}" for a, b, v in affinity.ranked_pairs()[:4]))
    print(f"  best split into {args.groups} group(s): " + " | ".join(", ".join(g) for g in best.groups)
          + f"  (total affinity {best.score:.4g})")
    if args.compare:
        cmp_cfg = MultiTaskConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                  progress=progress, select_by="loss")
        grouped = train_groups(problem, [list(g) for g in best.groups], backbone, bkw, cmp_cfg, args.head_hidden,
                               device)
        joint = train_groups(problem, [names], backbone, bkw, cmp_cfg, args.head_hidden, device)
        result["compare"] = {"suggested_groups": grouped, "one_network": joint}
        for t in problem.tasks:
            print(f"  {t.name:<{width}}  test {t.metric_name}: groups {grouped['metrics'][t.name]:.4f}  "
                  f"one network {joint['metrics'][t.name]:.4f}")
        print(f"  mean test loss: groups {grouped['mean_loss']:.4f} ({grouped['parameters']:,} parameters), "
              f"one network {joint['mean_loss']:.4f} ({joint['parameters']:,} parameters)")
    if args.plot:
        label = "TAG affinity Z[i][j]" if args.method == "tag" else "transfer gain (scratch - transfer) / scratch"
        plot_affinity(args.plot, affinity.matrix, names, f"{args.method} on {problem.name}",
                      row_label="source task" if args.method == "transfer" else "lookahead on task i",
                      col_label="target task" if args.method == "transfer" else "loss of task j",
                      value_label=label)
        result["plot"] = str(args.plot)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2, default=str) + "\n")
    return result


def _cmd_affinity(args: argparse.Namespace) -> int:
    run_affinity(args)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``affinity`` subcommand to the ``mtlmeta`` parser."""
    from mtl.cli import json_object_arg, positive_float_arg, positive_int_arg
    from mtl.utils.runtime import DEVICES

    p = sub.add_parser("affinity", help="task affinity: TAG lookahead or Taskonomy transfer matrix, task grouping")
    p.add_argument("--method", default="tag", choices=METHODS,
                   help="tag: lookahead affinity in joint training (Fifty et al. 2021); transfer: frozen-encoder "
                        "transfer matrix (Zamir et al. 2018) (default tag)")
    g = p.add_argument_group("problem")
    g.add_argument("--dataset", default="correlated", choices=AFFINITY_DATASETS,
                   help="default correlated: 4 regression tasks, t1~t2 and t3~t4 correlated")
    g.add_argument("--root", default=None, help="folder with the Omniglot zips (omniglot* datasets)")
    g.add_argument("--correlations", type=_correlations_arg, default=None, metavar="JSON",
                   help="correlated: the task correlation matrix, e.g. '[[1,0.9,0],[0.9,1,0],[0,0,1]]'")
    g.add_argument("--train-samples", type=positive_int_arg, default=None,
                   help="training samples (correlated, synthetic) or pairs (*-sides, multi-*)")
    g = p.add_argument_group("model and training")
    g.add_argument("--backbone", default=None, help="registry name (default mlp for vectors, conv4 for images)")
    g.add_argument("--backbone-kwargs", type=json_object_arg, default={}, metavar="JSON",
                   help='backbone arguments, e.g. \'{"hidden": [32]}\'')
    g.add_argument("--head-hidden", type=positive_int_arg, default=None, help="width of a hidden layer in each head")
    g.add_argument("--epochs", type=positive_int_arg, default=5,
                   help="joint training (tag, --compare) or source-encoder training (transfer) (default 5)")
    g.add_argument("--batch-size", type=positive_int_arg, default=64)
    g.add_argument("--lr", type=positive_float_arg, default=1e-3, help="Adam learning rate")
    g = p.add_argument_group("tag")
    g.add_argument("--every", type=positive_int_arg, default=1, help="probe every N training steps (default 1)")
    g.add_argument("--lookahead-lr", type=positive_float_arg, default=None,
                   help="SGD step size of the lookahead (default: --lr)")
    g = p.add_argument_group("transfer")
    g.add_argument("--target-samples", type=positive_int_arg, default=200,
                   help="labelled target examples for heads and scratch networks (default 200)")
    g.add_argument("--val-samples", type=positive_int_arg, default=200,
                   help="validation examples to pick their best epoch (default 200)")
    g.add_argument("--target-epochs", type=positive_int_arg, default=40, help="epochs on the target data (default 40)")
    g = p.add_argument_group("grouping")
    g.add_argument("--groups", type=positive_int_arg, default=2,
                   help="split the tasks into this many groups (default 2)")
    g.add_argument("--compare", action="store_true",
                   help="train the best split (one hard-shared network per group) and all tasks in one network; "
                        "report test metrics")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--device", default="auto", choices=DEVICES, help="where to train (default auto)")
    g.add_argument("--json", default=None, metavar="PATH", help="write a machine-readable result here")
    g.add_argument("--plot", default=None, metavar="PATH", help="save a heatmap of the affinity matrix (PNG)")
    g.add_argument("--overwrite", action="store_true", help="allow replacing existing --json / --plot files")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument("--threads", type=positive_int_arg, default=None, help="CPU threads for torch")
    p.set_defaults(func=_cmd_affinity)
