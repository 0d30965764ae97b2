"""The ``mtlmeta`` command line: one console script, one subcommand per capability.

Subcommands of other packages plug in through the ``mtlmeta.commands`` entry-point group:
each entry is a function ``register(subparsers)`` that adds a parser and sets ``func``.
Errors from bad input (:class:`~mtl.errors.ConfigError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from mtl.errors import ConfigError
from mtl.utils.runtime import DEVICES

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int_arg(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float_arg(text: str) -> float:
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def json_object_arg(text: str) -> dict:
    """argparse type: a JSON object such as ``'{"hidden": 32}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def int_list_arg(text: str) -> list[int]:
    """argparse type: comma-separated integers such as ``16,17,18``."""
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def number_arg(text: str) -> float:
    """argparse type: a finite number (range checks are the library's, with their own messages)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def integer_arg(text: str) -> int:
    """argparse type: an integer (range checks are the library's)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


IMAGE_DATASETS: tuple[str, ...] = ("glyphs", "omniglot")
"""Labelled image sets the single-dataset commands (selftrain, distill, adapt) accept."""


def add_image_data_args(group: argparse._ArgumentGroup, glyph_classes: int = 20) -> None:
    """``--dataset {glyphs,omniglot}``, ``--root``, ``--subsets`` and ``--glyph-classes``."""
    group.add_argument("--dataset", default="glyphs", choices=IMAGE_DATASETS, help="default glyphs (built in)")
    group.add_argument("--root", default=None, help="omniglot: folder with the official zips or folders")
    group.add_argument("--subsets", default="background_small1,background_small2",
                       help="omniglot subsets, comma-separated (default the two small background sets)")
    group.add_argument("--glyph-classes", type=positive_int_arg, default=glyph_classes,
                       help=f"glyphs: classes (default {glyph_classes})")


def load_image_data(args: argparse.Namespace, resample: str = "lanczos") -> tuple[Any, dict[str, Any]]:
    """The labelled set of :func:`add_image_data_args`' options, and a description for the JSON.

    glyphs: ``--glyph-classes`` classes of 20 drawings (seed 0); omniglot: ``--subsets`` read
    from ``--root`` (Lake et al. 2015), resized with ``resample``.
    """
    from mtl.data import load_omniglot, make_glyphs

    if args.dataset == "omniglot":
        if not args.root:
            raise ConfigError("--dataset omniglot needs --root DIR (the folder with the Omniglot zips or folders)")
        subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
        return load_omniglot(args.root, subsets=subsets, resample=resample), {"dataset": "omniglot",
                                                                               "subsets": subsets}
    return make_glyphs(args.glyph_classes, samples_per_class=20, seed=0), {"dataset": "glyphs",
                                                                            "classes": args.glyph_classes}


def budget_from_args(args: argparse.Namespace, default_seconds: float | None = None) -> Any:
    """The :class:`~mtl.utils.Budget` of :func:`add_training_args`' ``--budget-*`` options.

    Without ``--budget-seconds`` or ``--budget-iterations``: ``default_seconds`` as the budget,
    or ``None`` (no limit) when that is ``None`` too.
    """
    from mtl.utils.runtime import Budget

    clock = getattr(args, "budget_clock", "wall")
    if args.budget_seconds is None and args.budget_iterations is None:
        return None if default_seconds is None else Budget(seconds=default_seconds, clock=clock)
    return Budget(seconds=args.budget_seconds, iterations=args.budget_iterations, clock=clock)


def add_training_args(parser: argparse.ArgumentParser, default_seconds: float | None = None) -> None:
    """The options every training subcommand shares: seed, device, outputs, budget, progress."""
    g = parser.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--device", default="auto", choices=DEVICES, help="where to train (default auto)")
    g.add_argument("--out", default=None, help="run folder: metrics CSV, checkpoints, plots")
    g.add_argument("--json", default=None, metavar="PATH", help="write a machine-readable result here")
    g.add_argument("--budget-seconds", type=positive_float_arg, default=default_seconds,
                   help="stop training after this many seconds")
    g.add_argument("--budget-iterations", type=positive_int_arg, default=None,
                   help="stop training after this many iterations")
    g.add_argument("--budget-clock", default="wall", choices=("wall", "cpu"),
                   help="what --budget-seconds counts: wall time, or this process's CPU time (default wall)")
    g.add_argument("--overwrite", action="store_true", help="allow replacing existing outputs")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument("--threads", type=positive_int_arg, default=None,
                   help="CPU threads for torch (default: torch's choice)")


def add_precision_arg(group: argparse._ActionsContainer, what: str = "training forward passes") -> None:
    """``--precision {fp32,bf16}`` (:mod:`mtl.utils.precision`), its help naming what runs in bfloat16."""
    group.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                       help=f"bf16: {what} under bfloat16 autocast, float32 weights (about 1.5-1.9x faster on "
                            "CPUs with AMX and on recent GPUs; evaluation stays float32; default fp32)")


def _cmd_backbones(args: argparse.Namespace) -> int:
    from mtl.backbones import create_backbone, describe_backbone, list_backbones

    names = list_backbones(args.pattern)
    if not names:
        raise ConfigError(f"no backbone matches {args.pattern!r}; registered: {', '.join(list_backbones())}")
    rows = []
    for name in names:
        row = {"name": name, "description": describe_backbone(name)}
        if args.details:
            model = create_backbone(name)
            row["out_features"] = int(getattr(model, "out_features", 0))
            row["input_shape"] = list(getattr(model, "input_shape", ()))
            row["parameters"] = sum(p.numel() for p in model.parameters())
        rows.append(row)
    if args.as_json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        extra = ""
        if args.details:
            shape = "x".join(map(str, r["input_shape"]))
            extra = f"  [{shape} -> {r['out_features']}, {r['parameters']:,} params]"
        print(f"{r['name']:<{width}}  {r['description']}{extra}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from mtl.data.registry import list_datasets

    infos = list_datasets()
    if args.as_json:
        print(json.dumps([{"name": i.name, "kind": i.kind, "description": i.description,
                           "needs_files": i.needs_files} for i in infos], indent=2))
        return 0
    width = max(len(i.name) for i in infos)
    for i in infos:
        files = "needs --root" if i.needs_files else "built in"
        print(f"{i.name:<{width}}  {i.kind:<14} {files:<12}  {i.description}")
    return 0


#: Modules of ``mtl`` whose ``register(subparsers)`` adds a built-in subcommand.
BUILTIN_COMMAND_MODULES = (
    "mtl.multitask.cli",
    "mtl.transfer.cli",
    "mtl.distill.cli",
    "mtl.adaptation.cli",
    "mtl.affinity.cli",
)


def _builtin_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbones", help="list the registered backbones")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'conv*'")
    p.add_argument("--details", action="store_true", help="build each one and show sizes")
    p.add_argument("--json", dest="as_json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_backbones)

    p = sub.add_parser("datasets", help="list the available datasets")
    p.add_argument("--json", dest="as_json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_datasets)

    import importlib

    for module_name in BUILTIN_COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise  # the module exists but one of its own imports is missing
            continue
        module.register(sub)


def _plugin_commands() -> list[tuple[str, Register]]:
    found = []
    for ep in sorted(entry_points(group="mtlmeta.commands"), key=lambda e: e.name):
        try:
            found.append((ep.name, ep.load()))
        except Exception as exc:  # a broken plug-in must not take the whole CLI down
            print(f"mtlmeta: warning: subcommand {ep.name!r} unavailable: {exc}", file=sys.stderr)
    return found


def build_parser() -> argparse.ArgumentParser:
    """The full ``mtlmeta`` parser with built-in and plug-in subcommands."""
    parser = _Parser(
        prog="mtlmeta",
        description="Learning from related tasks: multi-task, transfer, meta-learning and more.",
    )
    from mtl import __version__

    parser.add_argument("--version", action="version", version=f"mtlmeta {__version__}")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a module first, e.g. one that registers your own backbones (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _builtin_commands(sub)
    for _name, register in _plugin_commands():
        register(sub)
    return parser


def _import_user_modules(argv: list[str]) -> None:
    """Import ``--import MODULE`` modules before parsing, so what they register is known."""
    import importlib

    for i, arg in enumerate(argv):
        name = None
        if arg == "--import" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--import="):
            name = arg.split("=", 1)[1]
        if name:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                print(f"mtlmeta: error: --import {name!r} failed: {exc}", file=sys.stderr)
                raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mtlmeta`` console script; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    _import_user_modules(argv)
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"mtlmeta: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtlmeta: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
