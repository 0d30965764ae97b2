"""Self-training on Omniglot characters with 1, 2 or 5 labelled drawings per character.

Pseudo-label self-training (Scudder 1965; Yarowsky 1995; Lee 2013) against supervised-only
training, on the 242 characters of the two small background subsets of Omniglot (Lake et al.
2015). The drawers in ``--test-drawers`` (default 16-20) are the test set; of the other 15
drawings of each character, ``shots`` (chosen by the seed) are labelled and the rest form the
unlabelled pool (their true classes are used only to measure pseudo-label precision). Round 0 is
supervised-only; each later round pseudo-labels part of the pool and trains a fresh student on
labelled + pseudo-labelled drawings, every round with the same number of steps.

    python benchmarks/selftrain_omniglot.py --shots 1,2,5 --seeds 0,1,2 --out runs/selftrain_omniglot

Prints a Markdown table (mean +- std over seeds, per round) and writes ``selftrain_omniglot.json``
and ``selftrain_omniglot.png`` (test accuracy and pseudo-label precision per round). Skips with a
message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import shlex
import sys
import time
from pathlib import Path

import torch
from bench_stats import mean_std_present as mean_std

from meta.selftrain import OnlineConfig, SelfTrainConfig, pseudo_label_online, self_train, split_labelled_unlabelled
from mtl.cli import int_list_arg
from mtl.data import drawer_split, load_omniglot

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent / "shared" / "data" / "omniglot-original"
SUBSETS = ("background_small1", "background_small2")
DATA: dict = {}  # filled before the worker processes fork


def run_one(job: tuple[int, int, dict]) -> dict:
    """One (shots, seed) run on one thread; returns its per-round statistics."""
    shots, seed, opts = job
    torch.set_num_threads(1)
    start_cpu, start = time.process_time(), time.perf_counter()
    labelled, pool = split_labelled_unlabelled(DATA["rest"], shots, seed=seed)
    kwargs = {"hidden": opts["hidden"]}
    if opts["method"] == "online":
        cfg = OnlineConfig(epochs=opts["epochs"], threshold=opts["threshold"], k_per_class=opts["topk"],
                           batch_size=opts["batch_size"], unlabelled_batch_size=opts["unlabelled_batch_size"],
                           lr=opts["lr"], shift=opts["shift"], seed=seed, ramp_start=1, ramp_end=opts["epochs"] // 2)
        res = pseudo_label_online("conv4", labelled, pool, cfg, backbone_kwargs=kwargs, test=DATA["test"], log=None)
    else:
        cfg = SelfTrainConfig(rounds=opts["rounds"], threshold=opts["threshold"], k_per_class=opts["topk"],
                              labels=opts["labels"], steps=opts["steps"], batch_size=opts["batch_size"], lr=opts["lr"],
                              shift=opts["shift"], ema_decay=opts["ema_decay"], reinit=not opts["continue_student"],
                              seed=seed)
        res = self_train("conv4", labelled, pool, cfg, backbone_kwargs=kwargs, test=DATA["test"], log=None)
    out = res.to_dict()
    out.update({"shots": shots, "seed": seed, "labelled": len(labelled), "pool": len(pool),
                "cpu_seconds": time.process_time() - start_cpu, "wall_seconds": time.perf_counter() - start})
    print(f"  {shots}-shot seed {seed}: " + ", ".join(f"r{r['round']} {100 * r['accuracy']:.1f}%"
                                                     for r in out["rounds"])
          + f" ({out['cpu_seconds']:.0f} CPU s; {out['stop_reason']})", flush=True)
    return out


def summarise(runs: list[dict]) -> dict[int, list[dict]]:
    """Per shots, per round: mean +- std of accuracy, gain over round 0, pseudo-labels and precision."""
    table: dict[int, list[dict]] = {}
    for shots in sorted({r["shots"] for r in runs}):
        group = [r for r in runs if r["shots"] == shots]
        rounds = max(len(r["rounds"]) for r in group)
        rows = []
        for i in range(rounds):
            present = [r for r in group if len(r["rounds"]) > i]
            def col(key: str, present: list[dict] = present, i: int = i) -> list[float]:
                return [r["rounds"][i][key] for r in present]
            rows.append({
                "round": i, "seeds": len(present),
                "accuracy": mean_std(col("accuracy")),
                "gain": mean_std([r["rounds"][i]["accuracy"] - r["rounds"][0]["accuracy"] for r in present]),
                "pseudo_labelled": mean_std(col("pseudo_labelled")),
                "precision_added": mean_std(col("precision_added")),
                "precision": mean_std(col("precision")),
                "pool_accuracy": mean_std(col("pool_accuracy")),
            })
        table[shots] = rows
    return table


def _pm(ms: tuple[float, float], scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
    m, s = ms
    if math.isnan(m):
        return "-"
    sign = "+" if signed and m >= 0 else ""
    return f"{sign}{m * scale:.{digits}f} +- {s * scale:.{digits}f}"


def markdown(table: dict[int, list[dict]], label: str) -> str:
    """The per-round table in Markdown."""
    lines = [f"| labelled / char | {label} | test accuracy % | gain vs round 0 (pts) | pseudo-labels in use "
             "| precision of added % | precision in use % |",
             "|---|---|---|---|---|---|---|"]
    for shots, rows in table.items():
        for r in rows:
            name = "0 (supervised only)" if r["round"] == 0 else str(r["round"])
            lines.append(f"| {shots} | {name} | {_pm(r['accuracy'])} | {_pm(r['gain'], signed=True)} | "
                         f"{_pm(r['pseudo_labelled'], 1, 0)} | {_pm(r['precision_added'])} | {_pm(r['precision'])} |")
    return "\n".join(lines)


def plot(table: dict[int, list[dict]], path: Path, xlabel: str) -> None:
    """Accuracy and pseudo-label precision per round, one line per number of labelled drawings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for shots, rows in table.items():
        xs = [r["round"] for r in rows]
        for ax, key, style in ((axes[0], "accuracy", "-"), (axes[1], "precision_added", "-"),
                               (axes[1], "precision", ":")):
            pts = [(x, r[key]) for x, r in zip(xs, rows) if not math.isnan(r[key][0])]
            if not pts:
                continue
            m = [100 * p[1][0] for p in pts]
            s = [100 * p[1][1] for p in pts]
            x = [p[0] for p in pts]
            label = f"{shots}-shot" + ("" if key == "accuracy" else (" added" if key == "precision_added"
                                                                     else " in use"))
            line, = ax.plot(x, m, style, marker="o", label=label,
                            color=f"C{sorted(table).index(shots)}")
            ax.fill_between(x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], alpha=0.15,
                            color=line.get_color())
    axes[0].set(title="test accuracy (mean +- std over seeds)", xlabel=xlabel, ylabel="%")
    axes[1].set(title="pseudo-label precision", xlabel=xlabel, ylabel="%")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="folder with images_background_small{1,2}.zip")
    p.add_argument("--shots", type=int_list_arg, default=[1, 2, 5], help="labelled drawings per character")
    p.add_argument("--seeds", type=int_list_arg, default=[0, 1, 2])
    p.add_argument("--test-drawers", type=int_list_arg, default=[16, 17, 18, 19, 20])
    p.add_argument("--method", default="rounds", choices=("rounds", "online"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=500, help="steps per round (rounds)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the pool (online)")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--topk", type=int, default=3, help="new pseudo-labels per class per round (0: none)")
    p.add_argument("--labels", default="hard", choices=("hard", "soft"))
    p.add_argument("--ema-decay", type=float, default=None)
    p.add_argument("--continue-student", action="store_true", help="continue instead of re-initialising")
    p.add_argument("--hidden", type=int, default=32, help="conv4 width")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--unlabelled-batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--shift", type=int, default=2, help="random translation (pixels) of training images")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel, one thread each")
    p.add_argument("--out", default="runs/selftrain_omniglot")
    args = p.parse_args()
    root = Path(args.root)
    if not all((root / f"images_{s}.zip").is_file() or (root / f"images_{s}").is_dir() for s in SUBSETS):
        print(f"skipped: Omniglot small background subsets not found in {root} "
              "(expected images_background_small1.zip and images_background_small2.zip; see ../shared/data)")
        return 0
    torch.set_num_threads(1)
    command = "python benchmarks/selftrain_omniglot.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    data = load_omniglot(root, subsets=SUBSETS)
    masks = drawer_split(data, test_drawers=args.test_drawers)
    DATA["test"], DATA["rest"] = data.select(masks["test"]), data.select(~masks["test"])
    print(f"{data.num_classes} characters; test: {len(DATA['test'])} drawings (drawers {args.test_drawers}); "
          f"labelled + pool: {len(DATA['rest'])}")
    opts = {k: getattr(args, k) for k in ("method", "rounds", "steps", "epochs", "threshold", "labels", "ema_decay",
                                          "continue_student", "hidden", "batch_size", "unlabelled_batch_size", "lr",
                                          "shift")}
    opts["topk"] = args.topk or None
    jobs = [(shots, seed, opts) for shots in args.shots for seed in args.seeds]
    start = time.perf_counter()
    if args.jobs > 1:
        with mp.get_context("fork").Pool(args.jobs) as pool:
            runs = pool.map(run_one, jobs, chunksize=1)
    else:
        runs = [run_one(j) for j in jobs]
    table = summarise(runs)
    label = "epoch" if args.method == "online" else "round"
    md = markdown(table, label)
    cpu = sum(r["cpu_seconds"] for r in runs)
    print(f"\n`{command}`\n\n{md}\n\n{len(runs)} runs, {cpu:.0f} CPU s in total, "
          f"{time.perf_counter() - start:.0f} s wall, 1 thread per run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(table, out / "selftrain_omniglot.png", label)
    (out / "selftrain_omniglot.json").write_text(json.dumps(
        {"command": command, "options": opts, "table": {str(k): v for k, v in table.items()}, "markdown": md,
         "cpu_seconds": cpu, "runs": runs}, indent=2) + "\n")
    print(f"wrote {out / 'selftrain_omniglot.png'} and {out / 'selftrain_omniglot.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
