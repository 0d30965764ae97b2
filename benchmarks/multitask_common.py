"""Helpers shared by the multi-task benchmarks: run ``mtlmeta multitask`` rows, aggregate over seeds, print tables.

Every benchmark row is a plain ``mtlmeta multitask ...`` command (run in-process, one thread), so
each number in docs/benchmarks.md can be reproduced by that command alone. Results are cached as
one JSON per run in the output folder; rerunning a benchmark only runs what is missing
(``--force`` reruns everything).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def omniglot_root_or_skip(name: str) -> Path:
    """``../shared/data/omniglot-original``, or exit 0 with a clear message when it is absent."""
    path = SHARED_DATA / "omniglot-original"
    if not (path / "images_background_small1.zip").is_file():
        print(f"SKIP {name}: real data not available ({path}/images_background_small1.zip is absent); "
              "this benchmark reads the official Omniglot 'small' subsets from ../shared/data")
        sys.exit(0)
    return path


def common_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """Options every multi-task benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=default_out, help="folder for the per-run JSON files and the table")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs (for a quick check)")
    p.add_argument("--force", action="store_true", help="rerun runs whose JSON already exists")
    return p


def display(args: Sequence[str]) -> str:
    """The command line a user would type for ``args``."""
    return "mtlmeta multitask " + shlex.join([str(a) for a in args])


def full_args(args: Sequence[str], json_path: Path | str) -> list[str]:
    """``args`` plus the options every benchmark run adds: one thread, JSON output, no progress bar."""
    return [str(a) for a in args] + ["--threads", "1", "--no-progress", "--json", str(json_path)]


def run(args: Sequence[str], json_path: Path, force: bool = False) -> dict:
    """Run one ``mtlmeta multitask`` command (unless its JSON exists) and return its JSON."""
    from mtl.cli import main

    if json_path.is_file() and not force:
        return json.loads(json_path.read_text())
    command = full_args(args, json_path) + (["--overwrite"] if json_path.exists() else [])
    print(f"$ {display(command)}", flush=True)
    code = main(["multitask", *command])
    if code != 0:
        raise SystemExit(f"the command above failed with exit code {code}")
    return json.loads(json_path.read_text())


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    """``mean +- std`` of ``values * scale``."""
    m, s = mean_std([v * scale for v in values])
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def write_table(out: Path, title: str, lines: Sequence[str], results: dict) -> None:
    """Print the markdown table and save it with the raw results."""
    text = "\n".join([f"### {title}", "", *lines, ""])
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def run_classification_rows(out: Path, seeds: Sequence[int], rows: dict[str, list[str]],
                            base_args: Callable[[int], list[str]], tasks: Sequence[str], force: bool = False,
                            slug: Callable[[str], str] = str) -> dict:
    """Run every row for every seed (single-task first, as the Delta-m baseline); collect per-task results."""
    results: dict = {}
    for seed in seeds:
        single_json = out / f"single-s{seed}.json"
        for row, extra in rows.items():
            args = base_args(seed) + extra
            if row != "single":
                args += ["--baseline-json", str(single_json)]
            res = run(args, out / f"{slug(row)}-s{seed}.json", force)
            cell = results.setdefault(row, {**{t: [] for t in tasks}, "delta_m": [], "seconds": [], "best_epochs": []})
            for task in tasks:
                cell[task].append(res["metrics"][task])
            cell["delta_m"].append(res["delta_m"])
            cell["seconds"].append(res["training"]["train_seconds"])
            cell["parameters"] = res["model"]["parameters"]
            cell["best_epochs"].append(res["training"]["best_epoch"])
    return results


def classification_table(results: dict, tasks: Sequence[str]) -> list[str]:
    """Markdown rows: per-task accuracy (%), Delta-m, parameters and mean train seconds."""
    head = " | ".join(f"{t} acc. (%)" for t in tasks)
    lines = [f"| model | {head} | Delta-m (%) | parameters | train s / run |",
             "|---|" + "---|" * (len(tasks) + 3)]
    for row, r in results.items():
        dm = "0 (reference)" if row == "single" else fmt(r["delta_m"], digits=2)
        accs = " | ".join(fmt(r[t], 100, 1) for t in tasks)
        lines.append(f"| {row} | {accs} | {dm} | {r['parameters']:,} | {mean_std(r['seconds'])[0]:.0f} |")
    return lines


def command_lines(rows: dict[str, list[str]], base_args: Callable[[int], list[str]],
                  slug: Callable[[str], str] = str) -> list[str]:
    """One documented command per row, with ``S`` standing for the seed."""
    lines = []
    for row, extra in rows.items():
        args = base_args(0) + extra
        args[args.index("--seed") + 1] = "S"
        if row != "single":
            args += ["--baseline-json", "single-sS.json"]
        lines.append(f"- {row}: `{display(full_args(args, f'{slug(row)}-sS.json'))}`")
    return lines
