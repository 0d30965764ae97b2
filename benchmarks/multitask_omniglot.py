"""Benchmark: Omniglot character (242-way) and alphabet (8-way) classification from the same images.

The two "small" background subsets in ../shared/data (Lake et al. 2015); drawers 1-14 train,
15-16 validation (model selection), 17-20 test: every character is tested on drawings by people
never seen in training. Single-task (one conv4 per task), hard sharing (one conv4), soft sharing
(two L2-tied conv4 columns) and MMoE (two conv4 experts), all conv4 with 32 filters, linear heads.
Reports test accuracies and Delta-m against single-task (LibMTL's average relative
improvement), mean +- std over seeds. Skips when ../shared/data is absent.

    .venv/bin/python benchmarks/multitask_omniglot.py            # about 9 minutes on one thread
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

EPOCHS = 10
ARCHS = {
    "single": ["--arch", "single"],
    "hard": ["--arch", "hard"],
    "soft": ["--arch", "soft", "--lambda", "0.01"],
    "mmoe": ["--arch", "mmoe", "--experts", "2"],
}


def base_args(root: Path | str, seed: int, epochs: int) -> list[str]:
    return ["--dataset", "omniglot", "--root", str(root), "--backbone", "conv4", "--backbone-kwargs",
            '{"hidden": 32}', "--epochs", str(epochs), "--batch-size", "64", "--lr", "0.001", "--select", "metric",
            "--seed", str(seed)]


def main() -> None:
    parser = common_parser(__doc__.splitlines()[0], "runs/benchmarks/multitask_omniglot")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    opts = parser.parse_args()
    root = omniglot_root_or_skip("multitask_omniglot")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = opts.epochs or EPOCHS
    names = ["single"] + [a for a in opts.archs if a != "single"]
    rows = {arch: ARCHS[arch] for arch in names}
    tasks = ("character", "alphabet")
    results = run_classification_rows(out, opts.seeds, rows, lambda seed: base_args(root, seed, epochs), tasks,
                                      opts.force)
    lines = classification_table(results, tasks)
    lines += ["", f"Seeds {opts.seeds}; epochs chosen on validation drawers (best epoch per run: "
              + "; ".join(f"{a} {results[a]['best_epochs']}" for a in names) + ").", "",
              "Commands (S = seed):", ""]
    lines += command_lines(rows, lambda seed: base_args("../shared/data/omniglot-original", seed, epochs))
    write_table(out, "Omniglot character + alphabet (held-out drawers)", lines, results)


if __name__ == "__main__":
    main()
