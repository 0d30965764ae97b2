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
    common_parser,
    display,
    fmt,
    full_args,
    mean_std,
    omniglot_root_or_skip,
    run,
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
    results: dict = {}
    for seed in opts.seeds:
        single_json = out / f"single-s{seed}.json"
        for row, extra in ROWS.items():
            args = base_args(root, seed, epochs) + extra
            if row != "single":
                args += ["--baseline-json", str(single_json)]
            res = run(args, out / f"{_slug(row)}-s{seed}.json", opts.force)
            cell = results.setdefault(row, {"left": [], "right": [], "delta_m": [], "seconds": []})
            for task in ("left", "right"):
                cell[task].append(res["metrics"][task])
            cell["delta_m"].append(res["delta_m"])
            cell["seconds"].append(res["training"]["train_seconds"])
            cell["parameters"] = res["model"]["parameters"]
    lines = ["| model | left acc. (%) | right acc. (%) | Delta-m (%) | parameters | train s / run |",
             "|---|---|---|---|---|---|"]
    for row, r in results.items():
        dm = "0 (reference)" if row == "single" else fmt(r["delta_m"], digits=2)
        lines.append(f"| {row} | {fmt(r['left'], 100, 1)} | {fmt(r['right'], 100, 1)} | {dm} | "
                     f"{r['parameters']:,} | {mean_std(r['seconds'])[0]:.0f} |")
    lines += ["", f"Seeds {opts.seeds}; the seed also picks the ten characters and the pairs.", "",
              "Commands (S = seed):", ""]
    for row, extra in ROWS.items():
        args = base_args("../shared/data/omniglot-original", 0, epochs) + extra
        args[args.index("--seed") + 1] = "S"
        if row != "single":
            args += ["--baseline-json", "single-sS.json"]
        lines.append(f"- {row}: `{display(full_args(args, f'{_slug(row)}-sS.json'))}`")
    write_table(out, "Two overlapping Omniglot characters (MultiMNIST style)", lines, results)


if __name__ == "__main__":
    main()
