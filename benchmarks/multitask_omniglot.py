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
    common_parser,
    display,
    fmt,
    full_args,
    mean_std,
    omniglot_root_or_skip,
    run,
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
    results: dict = {}
    for seed in opts.seeds:
        single_json = out / f"single-s{seed}.json"
        for arch in names:
            args = base_args(root, seed, epochs) + ARCHS[arch]
            if arch != "single":
                args += ["--baseline-json", str(single_json)]
            res = run(args, out / f"{arch}-s{seed}.json", opts.force)
            cell = results.setdefault(arch, {"character": [], "alphabet": [], "delta_m": [], "seconds": []})
            for task in ("character", "alphabet"):
                cell[task].append(res["metrics"][task])
            cell["delta_m"].append(res["delta_m"])
            cell["seconds"].append(res["training"]["train_seconds"])
            cell["parameters"] = res["model"]["parameters"]
            cell["best_epochs"] = cell.get("best_epochs", []) + [res["training"]["best_epoch"]]
    lines = ["| model | character acc. (%) | alphabet acc. (%) | Delta-m (%) | parameters | train s / run |",
             "|---|---|---|---|---|---|"]
    for arch in names:
        r = results[arch]
        dm = "0 (reference)" if arch == "single" else fmt(r["delta_m"], digits=2)
        lines.append(f"| {arch} | {fmt(r['character'], 100, 1)} | {fmt(r['alphabet'], 100, 1)} | {dm} | "
                     f"{r['parameters']:,} | {mean_std(r['seconds'])[0]:.0f} |")
    lines += ["", f"Seeds {opts.seeds}; epochs chosen on validation drawers (best epoch per run: "
              + "; ".join(f"{a} {results[a]['best_epochs']}" for a in names) + ").", "",
              "Commands (S = seed):", ""]
    for arch in names:
        args = base_args("../shared/data/omniglot-original", 0, epochs) + ARCHS[arch]
        args[args.index("--seed") + 1] = "S"
        if arch != "single":
            args += ["--baseline-json", "single-sS.json"]
        lines.append(f"- {arch}: `{display(full_args(args, f'{arch}-sS.json'))}`")
    write_table(out, "Omniglot character + alphabet (held-out drawers)", lines, results)


if __name__ == "__main__":
    main()
