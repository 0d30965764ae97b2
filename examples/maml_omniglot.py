"""Tutorial: MAML on Omniglot, 5-way 1-shot, with the library API (Finn et al. 2017).

What it shows, step by step:

1. load Omniglot (the official zips: ``--root`` a folder that has them, or ``--download``
   to fetch them) or the built-in glyphs (``--dataset glyphs``, no file needed);
2. split the *characters* so that test tasks use classes never seen in training;
3. build 5-way 1-shot episodes, a conv4 from the backbone registry, and second-order MAML;
4. meta-train under a time budget, validating on held-out classes and keeping the best model;
5. evaluate on 600 test tasks with a 95% confidence interval, as the papers report;
6. adapt to one new task with ``maml.adapt`` and classify its queries.

Run it::

    python examples/maml_omniglot.py --root ../shared/data/omniglot-original   # a few minutes
    python examples/maml_omniglot.py --dataset glyphs --smoke                   # seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from meta import MAML, MetaTrainer, MetaTrainerConfig, evaluate
from mtl.backbones import create_backbone
from mtl.data import EpisodeSampler, alphabet_split, load_omniglot, make_glyphs, vinyals_split
from mtl.data.omniglot import default_cache_dir
from mtl.errors import ConfigError
from mtl.utils import Budget, seed_everything


def load_classes(args: argparse.Namespace) -> tuple[object, dict[str, list[int]]]:
    """The dataset and a class split {train, val, test} with disjoint characters."""
    if args.dataset == "glyphs":
        data = make_glyphs(num_classes=120 if args.smoke else 600, samples_per_class=20, seed=0)
        n = data.num_classes
        ids = list(range(n))
        return data, {"train": ids[: n * 2 // 3], "val": ids[n * 2 // 3: n * 5 // 6], "test": ids[n * 5 // 6:]}
    root = Path(args.root) if args.root else default_cache_dir() / "omniglot"
    zips = sorted(p.name for p in root.glob("images_background*.zip")) if root.is_dir() else []
    if "images_background.zip" in zips or args.download:
        data = load_omniglot(root, subsets=("background",), download=args.download)
        return data, vinyals_split(data, num_train=int(data.num_classes * 0.7), num_val=int(data.num_classes * 0.1))
    if {"images_background_small1.zip", "images_background_small2.zip"} <= set(zips):
        data = load_omniglot(root, subsets=("background_small1", "background_small2"))
        # The two small subsets: test on Greek and Latin, validate on Tagalog (alphabets never trained on).
        return data, alphabet_split(data, test_alphabets=("Greek", "Latin"), val_alphabets=("Tagalog",))
    raise ConfigError(f"no Omniglot zips in --root {root}; pass --download to fetch them, or --dataset glyphs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("omniglot", "glyphs"), default="omniglot")
    parser.add_argument("--root", help="folder with the official Omniglot zips")
    parser.add_argument("--download", action="store_true", help="fetch the official zips into --root")
    parser.add_argument("--seconds", type=float, default=180.0, help="meta-training time budget")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that finishes in seconds")
    parser.add_argument("--out", default="runs/examples/maml_omniglot")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    seed_everything(0)

    try:
        data, split = load_classes(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: {data.num_classes} classes; train/val/test characters: "
          f"{len(split['train'])}/{len(split['val'])}/{len(split['test'])}")

    ways, shots, queries, meta_batch = 5, 1, 15, 4 if args.smoke else 16
    train = EpisodeSampler(data, ways, shots, queries, classes=split["train"], seed=0)
    val = EpisodeSampler(data, ways, shots, queries, classes=split["val"], seed=1)
    test = EpisodeSampler(data, ways, shots, queries, classes=split["test"], seed=2)

    # MAML's BatchNorm convention: statistics of the current batch, in training and testing.
    net = create_backbone("conv4", num_classes=ways, track_running_stats=False, hidden=16 if args.smoke else 64)
    maml = MAML(net, inner_lr=0.4, inner_steps=1, eval_inner_steps=3)

    config = MetaTrainerConfig(meta_lr=1e-3, validate_every=5 if args.smoke else 50,
                               validation_tasks=10 if args.smoke else 100, checkpoint_every=50, progress=not args.smoke)
    trainer = MetaTrainer(maml, lambda i: train.batch(i, meta_batch), lambda i: val.batch(i, 20), config,
                          out_dir=args.out)
    budget = Budget(iterations=10) if args.smoke else Budget(seconds=args.seconds)
    summary = trainer.fit(budget)
    trainer.load_best()
    print(f"meta-trained {summary['meta_iterations']} iterations; best validation accuracy "
          f"{summary['best_val_score']:.3f} at iteration {summary['best_iteration']}")

    tasks = 20 if args.smoke else 600
    result = evaluate(maml, lambda i: test.batch(i, 20), num_tasks=tasks, progress=not args.smoke)
    print(f"test: {tasks} tasks of unseen characters, accuracy {100 * result['accuracy']:.2f} "
          f"+- {100 * result['ci95']:.2f} % (95% CI)")

    maml.eval()  # evaluation mode: eval_inner_steps inner steps
    task = test.episode(10_000)
    predict = maml.adapt(task.support_x, task.support_y)  # a predictor for this one new task
    with torch.no_grad():
        guess = predict(task.query_x).argmax(dim=1)
    print(f"one new task: {(guess == task.query_y).float().mean().item():.2f} of its {len(guess)} queries right")
    plot = trainer.plot()
    if plot is not None:
        print(f"learning curves: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
