"""Calibrate the strategy advisor on an Omniglot split disjoint from the evaluation one.

The evaluation table of ``benchmarks/transfer_omniglot.py`` transfers to Greek + Latin. Here
Greek and Latin are never loaded into any set: the target is Korean + Tagalog (57 characters,
drawers 1-10 to train, 11-20 to test) and the sources are built from the remaining four alphabets
of the small background subsets (Balinese, Early Aramaic, Japanese (katakana), Sanskrit: 135
characters), with five kinds of source:

- ``near``: those drawings as they are;
- ``inverted``: inverted contrast (``1 - x``);
- ``glyphs``: 135 procedural glyph classes (another generator seed than the evaluation's);
- ``bold``: strokes thickened (3x3 max filter);
- ``blurred``: strokes smeared (5x5 box filter, rescaled to a maximum of 1).

The last two are not in the evaluation table, so the threshold is set on more distances than the
three evaluated sources. For each source a conv4 is pre-trained as in the evaluation (6 epochs,
Adam 3e-3), the proxy A-distance to the unlabelled target pool is measured on three spaces (raw
pixels, the source model's first block, its whole trunk), and the linear probe, the partial
fine-tune from block3 and the full fine-tune run with 1 and 10 drawings per character (the
evaluation recipe). :func:`mtl.transfer.regimes.calibrate_rule` then picks the measure, the
threshold and a strategy per regime that lose the least accuracy on these cells, and a
leave-one-source-out check refits without each source and predicts it.

    python benchmarks/transfer_calibrate.py --seeds 0,1,2 --out runs/transfer_calibrate
    python benchmarks/transfer_calibrate.py --refit runs/transfer_calibrate/transfer_calibrate.json  # no training

Prints the tables and writes ``transfer_calibrate.json``. Skips when the data folder is absent.
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
import torch.nn.functional as F

from mtl.backbones import create_backbone
from mtl.cli import int_list_arg
from mtl.data.base import LabelledImages
from mtl.training import evaluate_classifier, train_classifier
from mtl.transfer import FineTuneRecipe, fine_tune, measure_distance
from mtl.transfer.problems import TransferProblem, _target_split, remap_classes
from mtl.transfer.regimes import (
    DISTANCE_MEASURES,
    RULES,
    CalibrationCell,
    calibrate_rule,
    distance_extractor,
    score_rule,
)

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent / "shared" / "data" / "omniglot-original"
CAL_TARGET = ("Korean", "Tagalog")
EVAL_TARGET = ("Greek", "Latin")  # excluded from every calibration set
SOURCES = ("near", "inverted", "glyphs", "bold", "blurred")
STRATEGIES = {"linear_probe": "linear_probe", "partial": "partial:block3", "full": "full"}


def transform(images: torch.Tensor, kind: str) -> torch.Tensor:
    """The source images of ``kind`` (``near`` unchanged)."""
    if kind == "inverted":
        return 1.0 - images
    if kind == "bold":
        return F.max_pool2d(images, 3, stride=1, padding=1)
    if kind == "blurred":
        out = F.avg_pool2d(images, 5, stride=1, padding=2, count_include_pad=False)
        return out / out.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return images


def calibration_data(root: Path) -> tuple[LabelledImages, LabelledImages]:
    """(source alphabets, target alphabets) of the calibration split; Greek and Latin dropped."""
    from mtl.data.omniglot import alphabet_split, load_omniglot

    data = load_omniglot(root, subsets=("background_small1", "background_small2"), image_size=28)
    split = alphabet_split(data, CAL_TARGET, EVAL_TARGET)
    return remap_classes(data.with_classes(split["train"])), remap_classes(data.with_classes(split["test"]))


def make_problem(src: LabelledImages, tgt: LabelledImages, kind: str, shots: int, seed: int) -> TransferProblem:
    if kind == "glyphs":
        from mtl.data.glyphs import make_glyphs

        source = make_glyphs(src.num_classes, 20, 28, seed=2)
    else:
        source = LabelledImages(transform(src.images, kind), src.targets, src.class_names)
    train, test, pool = _target_split(tgt, shots, 10, seed)
    return TransferProblem(source, train, test, pool, {"source": kind, "shots": shots, "seed": seed})


def verdict(x: dict) -> str:
    """``advised (yes)`` or ``advised (-lost points)``."""
    lost = "yes" if x["lost"] == 0 else f"-{100 * x['lost']:.1f}"
    return f"{x['advised']} ({lost})"


def analyse(cells: list[CalibrationCell], rows: list[dict], sources: list[str]) -> dict:
    """Fit the rule, score it and the seed rule, refit leaving each source out; print the tables."""
    rule, report = calibrate_rule(cells)
    print(f"\ncalibrated rule: {rule}")
    for m, e in report["per_measure"].items():
        print(f"  best with {m}: threshold {e['threshold']:.3f} (gap {e['margin']:.3f}), lost "
              f"{100 * e['lost']:.1f} pts, best in {e['hits']}/{e['cells']}, table {e['table']}")
    old = score_rule(RULES["four_regimes"], cells)
    new = score_rule(rule, cells)
    # Leave one source out: refit on the other sources, advise the held-out one's cells.
    loso = []
    for kind in sources:
        train_cells = [c for c in cells if not c.label.startswith(kind + " ")]
        held = [c for c in cells if c.label.startswith(kind + " ")]
        fold_rule, _ = calibrate_rule(train_cells)
        scored = score_rule(fold_rule, held)
        loso.append({"held_out": kind, "rule": asdict(fold_rule), **scored})
    loso_hits = sum(f["hits"] for f in loso)
    loso_lost = sum(f["lost"] for f in loso)
    lines = ["| source | drawings / char | " + " | ".join(f"{m} dist." for m in DISTANCE_MEASURES)
             + " | linear probe | partial (block3+) | full | best | seed rule | calibrated | left-out fit |",
             "|---|---|" + "---|" * (len(DISTANCE_MEASURES) + 7)]
    fold_of = {f["held_out"]: f for f in loso}
    for i, r in enumerate(rows):
        sd = {k: (sum((a - r["mean"][k]) ** 2 for a in v) / max(1, len(v) - 1)) ** 0.5
              for k, v in r["accuracy"].items()}
        acc = " | ".join(f"{100 * r['mean'][k]:.1f} +- {100 * sd[k]:.1f}" for k in STRATEGIES)
        o, n = old["rows"][i], new["rows"][i]
        f = next(x for x in fold_of[r["source"]]["rows"] if x["label"] == cells[i].label)

        lines.append(f"| {r['source']} | {r['shots']} | " + " | ".join(f"{r['distances'][m]:.2f}"
                                                                        for m in DISTANCE_MEASURES)
                     + f" | {acc} | {o['best']} | {verdict(o)} | {verdict(n)} | {verdict(f)} |")
    md = "\n".join(lines)
    print("\n" + md)
    print(f"\nseed rule on the calibration cells: best in {old['hits']}/{old['cells']}, lost "
          f"{100 * old['lost']:.1f} pts; calibrated (in-sample): {new['hits']}/{new['cells']}, lost "
          f"{100 * new['lost']:.1f} pts; leave-one-source-out: {loso_hits}/{len(cells)}, lost "
          f"{100 * loso_lost:.1f} pts")
    for f in loso:
        r = f["rule"]
        print(f"  without {f['held_out']}: {r['measure']} > {r['different_above']:.3f}, "
              f"little: {r['little_similar']}/{r['little_different']}, much: {r['much_similar']}/"
              f"{r['much_different']} -> held out best in {f['hits']}/{f['cells']}, lost {100 * f['lost']:.1f}")
    return {"rule": asdict(rule), "report": report, "seed_rule_score": old, "calibrated_score": new,
            "leave_one_source_out": loso, "markdown": md}


def plot(cells: list[CalibrationCell], report: dict, path: Path, evaluation: Path | None = None) -> None:
    """Per measure: distance against (linear probe - best fine-tune) with 1 drawing per character,
    the fitted threshold, and (``evaluation``: a ``transfer_omniglot.json``) the held-out cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held = []
    if evaluation is not None and evaluation.is_file():
        saved = json.loads(evaluation.read_text())
        for name, row in saved["table"].items():
            if name.endswith(" 1-shot") and "distances" in row:
                acc = {k: v[0] for k, v in row["strategies"].items()}
                held.append((name.split()[0], row["distances"], acc["linear_probe"] - max(acc["partial:block3"],
                                                                                           acc["full"])))
    fig, axes = plt.subplots(1, len(DISTANCE_MEASURES), figsize=(10, 3.2), sharey=True)
    for ax, m in zip(axes, DISTANCE_MEASURES):
        for c in cells:
            if c.per_class == 1:
                gap = 100 * (c.accuracy["linear_probe"] - max(c.accuracy["partial"], c.accuracy["full"]))
                ax.plot(c.distances[m], gap, "o", color="tab:blue", label="calibration" if c is cells[0] else None)
                ax.annotate(c.label.split()[0], (c.distances[m], gap), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        for i, (name, dist, gap) in enumerate(held):
            ax.plot(dist[m], 100 * gap, "x", color="tab:red", label="evaluation (held out)" if i == 0 else None)
            ax.annotate(name, (dist[m], 100 * gap), fontsize=7, color="tab:red", xytext=(3, -9),
                        textcoords="offset points")
        entry = report["per_measure"][m]
        ax.axvline(entry["threshold"], color="k", ls="--", lw=1)
        ax.axhline(0, color="gray", lw=0.5)
        ax.set(xlim=(0, 2.1), xlabel=f"proxy A-distance ({m})",
               title=f"{m}: threshold {entry['threshold']:.2f}" + (" (chosen)" if m == report["chosen"] else ""))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("linear probe - best fine-tune\n(points, 1 drawing / char)")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT))
    p.add_argument("--sources", default=",".join(SOURCES))
    p.add_argument("--shots", type=int_list_arg, default=[1, 10])
    p.add_argument("--seeds", type=int_list_arg, default=[0, 1, 2])
    p.add_argument("--hidden", type=int, default=32, help="conv4 width")
    p.add_argument("--source-epochs", type=int, default=6)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--step-size", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default="runs/transfer_calibrate")
    p.add_argument("--refit", default=None, metavar="JSON",
                   help="re-fit and re-tabulate the measurements saved in this JSON, without training")
    p.add_argument("--overwrite", action="store_true", help="with --refit: replace an earlier refit JSON")
    p.add_argument("--evaluation", default=None, metavar="JSON",
                   help="a transfer_omniglot.json whose held-out 1-shot cells the plot overlays")
    args = p.parse_args()
    if args.refit:
        saved = json.loads(Path(args.refit).read_text())
        cells = [CalibrationCell(**c) for c in saved["cells"]]
        analysis = analyse(cells, saved["rows"], [r["source"] for r in saved["rows"][::len(saved["args"]["shots"])]])
        print(f"\n{saved['command']} (refitted from {args.refit})")
        target = Path(args.out) / "transfer_calibrate_refit.json"
        if target.exists() and not args.overwrite:
            print(f"not written: {target} exists (pass --overwrite)")
            return 0
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"refit_of": args.refit, "cells": saved["cells"], **analysis}, indent=2))
        plot(cells, analysis["report"], target.with_suffix(".png"), Path(args.evaluation) if args.evaluation else None)
        print(f"wrote {target} and {target.with_suffix('.png')}")
        return 0
    root = Path(args.root)
    if not (root / "images_background_small1.zip").is_file():
        print(f"skipped: {root}/images_background_small1.zip not found (see ../shared/data)")
        return 0
    torch.set_num_threads(1)
    command = "python benchmarks/transfer_calibrate.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.process_time()
    src, tgt = calibration_data(root)
    print(f"calibration split: source {src.num_classes} characters, target {tgt.num_classes} "
          f"({' + '.join(CAL_TARGET)}); {' + '.join(EVAL_TARGET)} excluded", flush=True)
    cells: list[CalibrationCell] = []
    runs, rows = [], []
    for kind in args.sources.split(","):
        base = make_problem(src, tgt, kind, 1, 0)
        torch.manual_seed(0)
        model = create_backbone("conv4", hidden=args.hidden, num_classes=base.source.num_classes)
        train_classifier(model, base.source, epochs=args.source_epochs, batch_size=64, lr=3e-3, seed=0,
                         progress=False)
        distances = {m: measure_distance(distance_extractor(model, m), base.source.images, base.target_pool, seed=0)
                     for m in DISTANCE_MEASURES}
        print(f"source {kind}: proxy A-distance " + ", ".join(f"{m} {d:.3f}" for m, d in distances.items()),
              flush=True)
        for shots in args.shots:
            recipe = FineTuneRecipe(epochs=args.epochs, lr=args.lr, step_size=args.step_size, gamma=0.1,
                                    batch_size=min(args.batch_size, tgt.num_classes * shots))
            accs: dict[str, list[float]] = {k: [] for k in STRATEGIES}
            for seed in args.seeds:
                problem = make_problem(src, tgt, kind, shots, seed)
                for key, strategy in STRATEGIES.items():
                    m = copy.deepcopy(model)
                    fine_tune(m, problem.target_train, strategy, recipe=recipe, seed=seed)
                    acc = evaluate_classifier(m, problem.target_test)["accuracy"]
                    accs[key].append(acc)
                    runs.append({"source": kind, "shots": shots, "seed": seed, "strategy": key, "accuracy": acc})
            mean = {k: sum(v) / len(v) for k, v in accs.items()}
            cells.append(CalibrationCell(shots, distances, mean, f"{kind} {shots}-shot"))
            rows.append({"source": kind, "shots": shots, "distances": distances, "accuracy": accs, "mean": mean})
            print(f"  {kind} {shots}-shot: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in mean.items()), flush=True)
    analysis = analyse(cells, rows, args.sources.split(","))
    plot(cells, analysis["report"], out / "transfer_calibrate.png", Path(args.evaluation) if args.evaluation else None)
    total = time.process_time() - t0
    print(f"\n{command}\ntotal {total:.0f} CPU s")
    (out / "transfer_calibrate.json").write_text(json.dumps(
        {"command": command, "args": vars(args), "calibration_target": CAL_TARGET, "excluded": EVAL_TARGET,
         "cells": [asdict(c) for c in cells], "rows": rows, "runs": runs, **analysis, "cpu_seconds": total},
        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
