"""Tutorial: self-training with pseudo-labels (Scudder 1965; Yarowsky 1995; Lee 2013).

The loop: (1) train on the few labelled images, (2) predict the unlabelled pool, (3) keep the
most confident predictions as new labels (here: class-balanced top-k per class), (4) repeat.
Round 0 is the supervised baseline, so the printout shows what the pseudo-labels add, and how
precise they were (the pool's true labels are kept aside only to measure that).

Data: the built-in glyphs (default, no file needed) or Omniglot characters (``--root`` a folder
with the two "small" background zips), with ``--labels`` labelled drawings per class.

Run it::

    python examples/self_training.py                 # a few minutes
    python examples/self_training.py --root ../shared/data/omniglot-original --labels 2
    python examples/self_training.py --smoke         # seconds
"""

from __future__ import annotations

import argparse
import sys

import torch

from meta.selftrain import SelfTrainConfig, self_train, split_labelled_unlabelled
from mtl.data import drawer_split, load_omniglot, make_glyphs
from mtl.errors import ConfigError
from mtl.utils import seed_everything


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="folder with images_background_small1/2.zip (default: built-in glyphs)")
    parser.add_argument("--labels", type=int, default=2, help="labelled images per class")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that finishes in seconds")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    seed_everything(0)

    try:
        if args.root:
            data = load_omniglot(args.root, subsets=("background_small1", "background_small2"))
            masks = drawer_split(data, test_drawers=list(range(16, 21)), val_drawers=[])
            train, test = data.select(masks["train"]), data.select(masks["test"])
        else:
            data = make_glyphs(10 if args.smoke else 100, samples_per_class=20, seed=0)
            # The last 5 redraws of every glyph are the test set.
            rank = torch.zeros(len(data), dtype=torch.long)
            for c in range(data.num_classes):
                where = (data.targets == c).nonzero().flatten()
                rank[where] = torch.arange(len(where))
            train, test = data.select(rank < 15), data.select(rank >= 15)
        labelled, pool = split_labelled_unlabelled(train, per_class=args.labels, seed=0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{labelled.num_classes} classes: {len(labelled)} labelled, {len(pool)} unlabelled, {len(test)} test")

    config = SelfTrainConfig(rounds=1 if args.smoke else args.rounds, threshold=None,
                             k_per_class=2 if args.smoke else 3, steps=20 if args.smoke else 300,
                             batch_size=32, lr=1e-3, shift=2, seed=0, progress=False)
    result = self_train("conv4", labelled, pool, config, backbone_kwargs={"hidden": 8 if args.smoke else 32},
                        test=test)
    summary = result.to_dict()
    print(f"supervised only: {100 * summary['supervised_accuracy']:.1f} % -> after self-training: "
          f"{100 * summary['final_accuracy']:.1f} % ({summary['stop_reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
