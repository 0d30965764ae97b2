"""Which fine-tuning strategy wins where: the four transfer regimes on Omniglot, and the bottleneck speed-up.

A conv4 is pre-trained on a source, then transferred to 50 new characters (Greek and Latin, from
the two small background subsets of Omniglot, Lake et al. 2015) with 1 or 10 labelled drawings
per character (drawers 1-10), and tested on drawers 11-20. Sources:

- ``near``: the 175 characters of five other Omniglot alphabets;
- ``inverted``: the same drawings with inverted contrast (a shifted domain);
- ``glyphs``: 175 classes of the toolkit's procedural glyphs.

Strategies: linear probe, partial fine-tune from block3 (blocks 1-2 frozen), full fine-tune, and
training from random initialisation for reference; every one with the same recipe (new head, SGD
momentum 0.9, StepLR). The advisor's recommendations (from the drawings per character and the
proxy A-distance between source and target, measured on raw pixels, the source model's first block
and its whole trunk) are set against the measured winner, for the seed's four-regime rule and for
the rule calibrated on a disjoint split by ``benchmarks/transfer_calibrate.py`` (out of sample
here: Greek and Latin are never used there). Finally the linear probe and the partial fine-tune are timed with
and without the bottleneck-feature cache.

    python benchmarks/transfer_omniglot.py --seeds 0,1,2 --out runs/transfer_omniglot

Prints Markdown tables and writes ``transfer_omniglot.json`` and ``transfer_omniglot.png``.
Skips with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from bench_stats import mean_std

from mtl.backbones import create_backbone
from mtl.cli import int_list_arg
from mtl.training import evaluate_classifier, train_classifier
from mtl.transfer import FeatureCache, FineTuneRecipe, advise, fine_tune, measure_distance, trunk_layers
from mtl.transfer.problems import make_transfer_problem
from mtl.transfer.regimes import DISTANCE_MEASURES, RULES, distance_extractor

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent / "shared" / "data" / "omniglot-original"
STRATEGIES = ("linear_probe", "partial:block3", "full")


def pretrain(problem, args) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_backbone("conv4", hidden=args.hidden, num_classes=problem.source.num_classes)
    train_classifier(model, problem.source, epochs=args.source_epochs, batch_size=64, lr=3e-3, seed=0,
                     progress=False)
    return model


def recipe_for(shots: int, args) -> FineTuneRecipe:
    return FineTuneRecipe(epochs=args.epochs, lr=args.lr, step_size=args.step_size, gamma=0.1,
                          batch_size=min(args.batch_size, 50 * shots))


def run_strategy(source_model, problem, strategy: str, shots: int, seed: int, args) -> dict:
    model = copy.deepcopy(source_model)
    if strategy == "scratch":
        torch.manual_seed(1000 + seed)
        model = create_backbone("conv4", hidden=args.hidden, num_classes=problem.target_train.num_classes)
        res = fine_tune(model, problem.target_train, "full", recipe=recipe_for(shots, args), seed=seed)
    else:
        res = fine_tune(model, problem.target_train, strategy, recipe=recipe_for(shots, args), seed=seed)
    acc = evaluate_classifier(model, problem.target_test)["accuracy"]
    return {"accuracy": acc, "seconds": res.seconds, "cached": res.cached_features}


def speedup(source_model, problem, shots: int, args) -> list[dict]:
    rows = []
    for strategy in ("linear_probe", "partial:block3"):
        out = {}
        for cached in (False, True):
            model = copy.deepcopy(source_model)
            cache = FeatureCache() if cached else None
            start = time.process_time()
            fine_tune(model, problem.target_train, strategy, recipe=recipe_for(shots, args), seed=0, cache=cache)
            out[cached] = {"cpu_seconds": time.process_time() - start,
                           "accuracy": evaluate_classifier(model, problem.target_test)["accuracy"]}
        rows.append({"strategy": strategy, "shots": shots, "epochs": args.epochs, "recompute": out[False],
                     "cached": out[True], "speedup": out[False]["cpu_seconds"] / out[True]["cpu_seconds"]})
        print(f"  bottleneck {strategy}, {shots}-shot, {args.epochs} epochs: recompute "
              f"{out[False]['cpu_seconds']:.2f} CPU s, cached {out[True]['cpu_seconds']:.2f} CPU s "
              f"(x{rows[-1]['speedup']:.1f}); accuracy {100 * out[False]['accuracy']:.2f} vs "
              f"{100 * out[True]['accuracy']:.2f}%", flush=True)
    return rows


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(table)
    names = ["scratch", *STRATEGIES]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ms = [100 * table[c]["strategies"][name][0] for c in cells]
        ss = [100 * table[c]["strategies"][name][1] for c in cells]
        ax.bar([i + j * width for i in range(len(cells))], ms, width, yerr=ss, label=name, capsize=2)
    marks = {"four_regimes": ("kx", 4, "seed rule's advice"), "calibrated": ("k*", 8, "calibrated advice")}
    for i, c in enumerate(cells):
        for rule, advised in table[c]["advised_by"].items():
            if advised in names and rule in marks:
                j = names.index(advised)
                style, dy, label = marks[rule]
                ax.plot(i + j * width, 100 * table[c]["strategies"][advised][0] + dy, style, markersize=7,
                        label=label if i == 0 else None)
    ax.set_ylim(0, 112)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cells))], [c.replace(" ", "\n", 1) for c in cells],
                  fontsize=8)
    ax.set(ylabel="test accuracy % (50-way)", title="transfer to Greek + Latin (mean +- std over seeds)")
    ax.legend(fontsize=7, ncol=6, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT))
    p.add_argument("--sources", default="near,inverted,glyphs")
    p.add_argument("--shots", type=int_list_arg, default=[1, 10])
    p.add_argument("--seeds", type=int_list_arg, default=[0, 1, 2])
    p.add_argument("--hidden", type=int, default=32, help="conv4 width")
    p.add_argument("--source-epochs", type=int, default=6)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--step-size", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rules", default="four_regimes,calibrated", help="advisor rules to score (names in RULES)")
    p.add_argument("--out", default="runs/transfer_omniglot")
    args = p.parse_args()
    root = Path(args.root)
    if not (root / "images_background_small1.zip").is_file():
        print(f"skipped: {root}/images_background_small1.zip not found (see ../shared/data)")
        return 0
    torch.set_num_threads(1)
    command = "python benchmarks/transfer_omniglot.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.process_time()
    runs, table, distances, bottleneck = [], {}, {}, []
    rules = args.rules.split(",")
    for source in args.sources.split(","):
        base = make_transfer_problem("omniglot", source=source, shots=1, root=root, seed=0)
        model = pretrain(base, args)
        distances[source] = {m: measure_distance(distance_extractor(model, m), base.source.images, base.target_pool,
                                                 seed=0) for m in DISTANCE_MEASURES}
        print(f"source {source}: {base.source.num_classes} classes; proxy A-distance to target "
              + ", ".join(f"{m} {d:.3f}" for m, d in distances[source].items()), flush=True)
        for shots in args.shots:
            cell = f"{source} {shots}-shot"
            results: dict[str, list[float]] = {}
            for seed in args.seeds:
                problem = make_transfer_problem("omniglot", source=source, shots=shots, root=root, seed=seed)
                for strategy in ("scratch", *STRATEGIES):
                    if strategy == "scratch" and source != args.sources.split(",")[0]:
                        continue  # random init does not depend on the source: run it once
                    r = run_strategy(model, problem, strategy, shots, seed, args)
                    r.update({"source": source, "shots": shots, "seed": seed, "strategy": strategy})
                    runs.append(r)
                    results.setdefault(strategy, []).append(r["accuracy"])
            if "scratch" not in results:
                results["scratch"] = [r["accuracy"] for r in runs if r["strategy"] == "scratch" and r["shots"] == shots]
            advised_by = {}
            for rule in rules:
                advice = advise(shots, distances[source][RULES[rule].measure], trunk_layers(model), rule=rule)
                advised_by[rule] = str(advice.strategy).replace("features.", "")
            stats = {k: mean_std(v) for k, v in results.items()}
            winner = max(STRATEGIES, key=lambda k: stats[k][0])
            table[cell] = {"strategies": stats, "winner": winner, "advised_by": advised_by,
                           "distances": distances[source]}
            print(f"  {cell}: " + ", ".join(f"{k} {100 * m:.1f}" for k, (m, _) in stats.items())
                  + f" -> winner {winner}, advised " + ", ".join(f"{r}: {a}" for r, a in advised_by.items()),
                  flush=True)
            if source == "near" and shots == max(args.shots):
                bottleneck = speedup(model, problem, shots, args)
    lines = ["| source (proxy A-dist. pixels / block1 / trunk) | drawings / char | scratch | linear probe | "
             "partial (block3+) | full | winner | " + " | ".join(f"{r} advice" for r in rules) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(rules)]
    score = {r: {"hits": 0, "lost": 0.0} for r in rules}
    for cell, row in table.items():
        src, shots = cell.split(" ")
        s = row["strategies"]
        fmt = {k: f"{100 * s[k][0]:.1f} +- {100 * s[k][1]:.1f}" for k in s}
        best = max(s[k][0] for k in STRATEGIES)
        verdicts = []
        for rule, advised in row["advised_by"].items():
            lost = best - s[advised][0]
            score[rule]["hits"] += lost == 0
            score[rule]["lost"] += lost
            verdicts.append(f"{advised} ({'yes' if lost == 0 else f'no, -{100 * lost:.1f} pts'})")
        dist = " / ".join(f"{row['distances'][m]:.2f}" for m in DISTANCE_MEASURES)
        lines.append(f"| {src} ({dist}) | {shots.split('-')[0]} | {fmt['scratch']} | "
                     f"{fmt['linear_probe']} | {fmt['partial:block3']} | {fmt['full']} | {row['winner']} | "
                     + " | ".join(verdicts) + " |")
    lines.append("")
    for rule, sc in score.items():
        lines.append(f"{rule} ({RULES[rule].measure} > {RULES[rule].different_above:.3f}): right in "
                     f"{sc['hits']} of {len(table)} cells, {100 * sc['lost']:.1f} points lost in total")
    md = "\n".join(lines)
    speed = ["| strategy | drawings / char | epochs | recompute CPU s | cached CPU s | speed-up | accuracy recompute / "
             "cached % |", "|---|---|---|---|---|---|---|"]
    for r in bottleneck:
        speed.append(f"| {r['strategy']} | {r['shots']} | {r['epochs']} | {r['recompute']['cpu_seconds']:.2f} | "
                     f"{r['cached']['cpu_seconds']:.2f} | x{r['speedup']:.1f} | "
                     f"{100 * r['recompute']['accuracy']:.2f} / {100 * r['cached']['accuracy']:.2f} |")
    print("\n" + md + "\n\n" + "\n".join(speed))
    total = time.process_time() - t0
    print(f"\n{command}\ntotal {total:.0f} CPU s")
    (out / "transfer_omniglot.json").write_text(json.dumps(
        {"command": command, "args": vars(args), "distances": distances, "table": table, "runs": runs,
         "rules": {r: asdict(RULES[r]) for r in rules},
         "advice_score": score,
         "bottleneck": bottleneck, "cpu_seconds": total}, indent=2))
    plot(table, out / "transfer_omniglot.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
