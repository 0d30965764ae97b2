"""The few-shot benchmark behind ``mtlmeta fewshot benchmark`` (and ``make benchmark``).

Trains each algorithm for the same budget on the same tasks, tests each on the same fixed
held-out tasks, prints a table (mean accuracy with 95% confidence interval) and writes a plot,
``results.json`` and ``results.md`` to the output folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from meta.fewshot import FewShotConfig, run_fewshot
from mtl.utils import Budget, atomic_write_json, atomic_write_text, check_new_output, prepare_out_dir
from mtl.utils.logging import CSVLogger


def format_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of benchmark results."""
    regression = "mse" in results[0]
    metric = "MSE" if regression else "accuracy (%)"
    lines = [f"| algorithm | meta-iterations | train s | test tasks | {metric} | 95% CI | test tasks/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        scale = 1 if regression else 100
        value = r["mse"] if regression else r["accuracy"]
        lines.append(
            f"| {r['algorithm']} | {r['meta_iterations']} | {r['train_seconds']:.0f} | {r['test_tasks']} | "
            f"{value * scale:.2f} | +- {r['ci95'] * scale:.2f} | {r['tasks_per_second']:.0f} |"
        )
    return "\n".join(lines)


def plot_benchmark(path: Path, results: list[dict[str, Any]], run_dirs: list[Path], title: str) -> Path:
    """Bar chart of test accuracy (with 95% CI) and validation curves against training time."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    regression = "mse" in results[0]
    key = "mse" if regression else "accuracy"
    scale = 1 if regression else 100
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [r["algorithm"] for r in results]
    ax1.bar(names, [r[key] * scale for r in results], yerr=[r["ci95"] * scale for r in results],
            capsize=5, color="#4c72b0")
    ax1.set_ylabel("test MSE" if regression else "test accuracy (%)")
    ax1.set_title("held-out tasks (95% CI)")
    if not regression:
        low = min(r[key] * scale - r["ci95"] * scale for r in results)
        ax1.set_ylim(max(0.0, low - 10), 100)
    val_key = "val_loss" if regression else "val_accuracy"
    for name, run in zip(names, run_dirs):
        log = CSVLogger(run / "metrics.csv")
        if val_key in log.columns:
            pts = [(s, v * scale) for s, v in zip(log.column("seconds"), log.column(val_key)) if v == v]
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=name)
    ax2.set_xlabel("training seconds")
    ax2.set_ylabel("validation " + ("loss" if regression else "accuracy (%)"))
    ax2.set_title("validation during meta-training")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_benchmark(args: argparse.Namespace, algos: list[str], configs: list[FewShotConfig]) -> list[dict[str, Any]]:
    """Run every configuration for the same budget; print and save the table and the plot."""
    out = Path(args.out or "runs/benchmark")
    check_new_output(args.json, args.overwrite, what="--json")
    prepare_out_dir(out, overwrite=args.overwrite)
    seconds = args.budget_seconds if args.budget_iterations is None and args.budget_seconds else None
    if args.budget_seconds is None and args.budget_iterations is None:
        seconds = 60.0
    results, run_dirs = [], []
    for algo, cfg in zip(algos, configs):
        run_dir = out / algo
        budget = Budget(seconds=seconds, iterations=args.budget_iterations, clock=args.budget_clock)
        res = run_fewshot(cfg, budget, out_dir=run_dir, device=args.device, overwrite=args.overwrite,
                          progress=not args.no_progress)
        results.append(res)
        run_dirs.append(run_dir)
        metric = "mse" if "mse" in res else "accuracy"
        print(f"  {algo}: {metric} {res[metric] * (1 if metric == 'mse' else 100):.2f} "
              f"+- {res['ci95'] * (1 if metric == 'mse' else 100):.2f}", flush=True)
    cfg = configs[0].resolved()
    title = f"{cfg.dataset}: {cfg.ways}-way {cfg.shots}-shot, {cfg.backbone}, budget " + (
        f"{seconds:.0f}s" if seconds else f"{args.budget_iterations} iterations") + " per algorithm"
    table = format_table(results)
    print(f"\n{title}\n{results[0]['split']}\n\n{table}\n")
    plot = plot_benchmark(out / "benchmark.png", results, run_dirs, title)
    print(f"plot: {plot}")
    atomic_write_text(out / "results.md", f"{title}\n\n{table}\n")
    atomic_write_json(out / "results.json", results)
    if args.json:
        atomic_write_json(args.json, results)
    return results
