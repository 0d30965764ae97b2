"""Benchmark: two overlapping Omniglot characters, one task per position (MultiMNIST style).

In the manner of MultiMNIST (Sabour et al. 2017, as used by Sener and Koltun 2018): ten
characters, one in the top-left and one in the bottom-right of a 36x36 canvas, shifted by up to
4 pixels, overlapped, resized to 28x28; task "left" names the first and "right" the second.
Train pairs use the images of drawers 1-14, validation pairs drawers 15-16, test pairs drawers
17-20. Single-task and hard sharing (conv4, 32 filters) with equal weights, PCGrad and MGDA.
Skips when ../shared/data is absent.

    .venv/bin/python benchmarks/multitask_multiobject.py          # about 4 minutes on one thread
"""

from __future__ import annotations

from pathlib import Path

from multitask_common import (
    classification_table,
    command_lines,
    common_parser,
    omniglot_root_or_skip,
    run_classification_rows,
    write_table,
)

EPOCHS = 8
ROWS = {
    "single": ["--arch", "single"],
    "hard + equal": ["--arch", "hard", "--weighting", "equal"],
    "hard + pcgrad": ["--arch", "hard", "--weighting", "pcgrad"],
    "hard + mgda": ["--arch", "hard", "--weighting", "mgda"],
}


def base_args(root: Path | str, seed: int, epochs: int) -> list[str]:
    return ["--dataset", "multi-omniglot", "--root", str(root), "--train-samples", "2000", "--backbone", "conv4",
            "--backbone-kwargs", '{"hidden": 32}', "--epochs", str(epochs), "--batch-size", "64", "--lr", "0.001",
            "--select", "metric", "--seed", str(seed)]


def _slug(row: str) -> str:
    return row.replace(" + ", "-")


def main() -> None:
    opts = common_parser(__doc__.splitlines()[0], "runs/benchmarks/multitask_multiobject").parse_args()
    root = omniglot_root_or_skip("multitask_multiobject")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = opts.epochs or EPOCHS
    results = run_classification_rows(out, opts.seeds, ROWS, lambda seed: base_args(root, seed, epochs),
                                      ("left", "right"), opts.force, _slug)
    lines = classification_table(results, ("left", "right"))
    lines += ["", f"Seeds {opts.seeds}; the seed also picks the ten characters and the pairs.", "",
              "Commands (S = seed):", ""]
    lines += command_lines(ROWS, lambda seed: base_args("../shared/data/omniglot-original", seed, epochs), _slug)
    write_table(out, "Two overlapping Omniglot characters (MultiMNIST style)", lines, results)


if __name__ == "__main__":
    main()
