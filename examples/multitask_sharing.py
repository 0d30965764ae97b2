"""Tutorial: hard vs soft parameter sharing for two tasks on the same images.

Hard sharing (Caruana 1997) trains one trunk with one head per task; soft sharing (Duong et al.
2015) trains one network per task and ties their parameters with an L2 penalty
``lambda * sum_i ||theta_i - mean_j theta_j||^2``. Both are compared with one network per task
(single-task), the reference of Delta-m, the average relative improvement in percent
(Maninis et al. 2019).

The two tasks: the character and its alphabet on Omniglot (``--root`` a folder with the two
"small" background zips), or the glyph and its number of strokes on the built-in glyphs
(``--dataset glyphs``, no file needed).

Run it::

    python examples/multitask_sharing.py --dataset glyphs          # about a minute
    python examples/multitask_sharing.py --root ../shared/data/omniglot-original --epochs 10
    python examples/multitask_sharing.py --dataset glyphs --smoke  # seconds
"""

from __future__ import annotations

import argparse
import sys

import torch

from mtl.errors import ConfigError
from mtl.multitask import MultiTaskConfig, MultiTaskTrainer, build_model, delta_m, load_problem
from mtl.utils import seed_everything


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("omniglot", "glyphs"), default="omniglot")
    parser.add_argument("--root", help="folder with images_background_small1/2.zip (for --dataset omniglot)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lambda", dest="strength", type=float, default=0.01, help="soft-sharing tie strength")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that finishes in seconds")
    parser.add_argument("--out", default="runs/examples/multitask_sharing")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    try:
        if args.dataset == "glyphs":
            problem = load_problem("glyphs", num_classes=10 if args.smoke else 50)
        else:
            problem = load_problem("omniglot", root=args.root)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{problem.name}: tasks {[t.name for t in problem.tasks]}, {len(problem.train)} training images")

    epochs = 1 if args.smoke else args.epochs
    width = {"hidden": 8 if args.smoke else 32}
    options = {"single": {}, "hard": {}, "soft": {"strength": args.strength, "tie": "mean"}}
    results = {}
    for arch, opts in options.items():
        seed_everything(0)
        model = build_model(arch, problem.tasks, "conv4", width, **opts)
        trainer = MultiTaskTrainer(model, problem.tasks, problem.train, problem.val, weighting="equal",
                                   config=MultiTaskConfig(epochs=epochs, select_by="metric", seed=0,
                                                          progress=not args.smoke),
                                   out_dir=f"{args.out}/{arch}")
        trainer.fit(restore_best=True)
        results[arch] = trainer.evaluate(problem.test)
        params = sum(p.numel() for p in model.parameters())
        scores = ", ".join(f"{t}: {m['accuracy']:.3f}" for t, m in results[arch].items())
        print(f"{arch:>6}  {params:>7,} parameters  test accuracy  {scores}")

    def metric(arch: str) -> dict[str, float]:
        return {t.name: results[arch][t.name][t.metric_name] for t in problem.tasks}

    for arch in ("hard", "soft"):
        print(f"Delta-m of {arch} over single-task: {delta_m(metric(arch), metric('single'), problem.tasks):+.2f} %")
    print(f"per-task losses and task weights over time: {args.out}/<arch>/curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
