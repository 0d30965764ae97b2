"""Benchmark: the synthetic two-task regression of Ma et al. (2018) for task correlations p in {0, 0.5, 0.9, 1}.

Single-task, hard sharing, soft sharing and MMoE with about the same number of trunk parameters
(two 16-unit columns, one 32-unit shared trunk, two 16-unit tied columns, four 8-unit experts),
each followed by one 8-unit tower per task. Reports test MSE (mean of the two tasks) and Delta-m
against single-task, mean +- std over seeds; the seed also draws the problem instance.

    .venv/bin/python benchmarks/multitask_synthetic.py            # about 7 minutes on one thread
"""

from __future__ import annotations

from pathlib import Path

from multitask_common import common_parser, display, fmt, full_args, mean_std, run, write_table

PS = (0.0, 0.5, 0.9, 1.0)
EPOCHS = 6
ARCHS = {
    "single": ["--arch", "single", "--backbone-kwargs", '{"hidden": [16]}'],
    "hard": ["--arch", "hard", "--backbone-kwargs", '{"hidden": [32]}'],
    "soft": ["--arch", "soft", "--backbone-kwargs", '{"hidden": [16]}', "--lambda", "0.01"],
    "mmoe": ["--arch", "mmoe", "--backbone-kwargs", '{"hidden": [8]}', "--experts", "4"],
}


def base_args(p: float, seed: int, epochs: int) -> list[str]:
    return ["--dataset", "synthetic", "--correlation", f"{p:g}", "--train-samples", "32000", "--epochs", str(epochs),
            "--lr", "0.002", "--batch-size", "64", "--head-hidden", "8", "--select", "loss", "--seed", str(seed)]


def main() -> None:
    parser = common_parser(__doc__.splitlines()[0], "runs/benchmarks/multitask_synthetic")
    parser.add_argument("--ps", type=float, nargs="+", default=list(PS))
    opts = parser.parse_args()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = opts.epochs or EPOCHS
    results: dict = {}
    for p in opts.ps:
        for seed in opts.seeds:
            single_json = out / f"p{p:g}-single-s{seed}.json"
            for arch, extra in ARCHS.items():
                args = base_args(p, seed, epochs) + extra
                if arch != "single":
                    args += ["--baseline-json", str(single_json)]
                res = run(args, out / f"p{p:g}-{arch}-s{seed}.json", opts.force)
                cell = results.setdefault(f"{p:g}", {}).setdefault(arch, {"mse": [], "delta_m": [], "pearson": [],
                                                                          "seconds": [], "parameters": 0})
                cell["mse"].append(sum(res["metrics"].values()) / len(res["metrics"]))
                cell["delta_m"].append(res["delta_m"])
                cell["pearson"].append(res["dataset"]["label_pearson"])
                cell["seconds"].append(res["training"]["train_seconds"])
                cell["parameters"] = res["model"]["parameters"]
    names = list(ARCHS)
    lines = ["| p | label corr. | " + " | ".join(names) + " | best |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for p, row in results.items():
        means = {a: mean_std(row[a]["mse"])[0] for a in names}
        best = min(means, key=means.get)
        cells = []
        for a in names:
            text = fmt(row[a]["mse"])
            if a != "single":
                text += f" ({fmt(row[a]['delta_m'], digits=1)} %)"
            cells.append(f"**{text}**" if a == best else text)
        lines.append(f"| {p} | {mean_std(row['single']['pearson'])[0]:.2f} | " + " | ".join(cells) + f" | {best} |")
    first = next(iter(results.values()))
    lines += ["", "Parameters: " + ", ".join(f"{a} {first[a]['parameters']:,}" for a in names)
              + f". Seeds {opts.seeds}. Train seconds per run (mean): "
              + ", ".join(f"{a} {mean_std([s for r in results.values() for s in r[a]['seconds']])[0]:.1f}"
                          for a in names) + ".", "", "Commands (one per cell and seed):", ""]
    for arch, extra in ARCHS.items():
        args = base_args(0.5, 0, epochs) + extra
        args[args.index("--correlation") + 1] = "P"
        args[args.index("--seed") + 1] = "S"
        if arch != "single":
            args += ["--baseline-json", "pP-single-sS.json"]
        lines.append(f"- {arch}: `{display(full_args(args, f'pP-{arch}-sS.json'))}`")
    write_table(out, "MMoE synthetic regression (Ma et al. 2018): test MSE (Delta-m vs single-task)", lines,
                results)


if __name__ == "__main__":
    main()
