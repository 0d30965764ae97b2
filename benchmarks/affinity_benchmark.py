"""Benchmark: task affinity (TAG lookahead and a transfer matrix) and task grouping on tasks with known relations.

Two problems whose related task pairs are known by construction:

- ``correlated``: 4 synthetic regression tasks (Ma et al. 2018's construction, generalised):
  t1~t2 at cosine 0.9, t3~t4 at 0.7, pairs across 0. 4000 / 1000 / 2000 samples, mlp trunk of 16
  units, heads with 8 hidden units.
- ``omniglot-sides``: two overlapping Omniglot characters (20 characters from 4 alphabets, drawers
  1-14 train / 15-16 val / 17-20 test), tasks: character and alphabet of the left and of the right
  one; related pairs are the two tasks of a side. 3000 / 500 / 1000 pairs, conv4 with 32 filters.

For each seed: TAG affinities (Fifty et al. 2021) from one hard-shared network; a transfer matrix
(Zamir et al. 2018); does each rank the two related pairs highest? Then the TAG-suggested split
into 2 groups, the worst split by TAG and all tasks in one hard-shared network are trained (best
epoch on validation loss) and tested. Skips the Omniglot part when ../shared/data is absent.

    .venv/bin/python benchmarks/affinity_benchmark.py                      # about 15 CPU-minutes
    .venv/bin/python benchmarks/affinity_benchmark.py --parts correlated --seeds 0   # quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mtl.affinity import (
    TransferConfig,
    correlated_regression,
    omniglot_sides,
    plot_affinity,
    rank_groupings,
    tag_affinity,
    train_groups,
    transfer_matrix,
)
from mtl.multitask import MultiTaskConfig

ROOT = Path(__file__).resolve().parents[1]
OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot-original"

SETTINGS = {
    "correlated": {"backbone": "mlp", "kwargs": {"in_features": 100, "hidden": [16]}, "head_hidden": 8,
                   "epochs": 8, "every": 5, "lr": 1e-3, "source_epochs": 8, "target_samples": 200,
                   "target_epochs": 40, "true_pairs": [["t1", "t2"], ["t3", "t4"]]},
    "omniglot-sides": {"backbone": "conv4", "kwargs": {"in_channels": 1, "image_size": 28, "hidden": 32},
                       "head_hidden": None, "epochs": 6, "every": 5, "lr": 1e-3, "source_epochs": 6,
                       "target_samples": 200, "target_epochs": 40,
                       "true_pairs": [["left_char", "left_alphabet"], ["right_char", "right_alphabet"]]},
}


def load(part: str, seed: int):
    if part == "correlated":
        return correlated_regression(num_train=4000, num_val=1000, num_test=2000, seed=seed)
    return omniglot_sides(OMNIGLOT, sizes=(3000, 500, 1000), seed=seed)


def top_pairs_right(affinity, true_pairs) -> bool:
    top = {frozenset(p[:2]) for p in affinity.ranked_pairs()[:len(true_pairs)]}
    return top == {frozenset(p) for p in true_pairs}


def same_split(groups, true_pairs) -> bool:
    return {frozenset(g) for g in groups} == {frozenset(p) for p in true_pairs}


def run_part(part: str, seed: int, out: Path, transfer: bool, docs_img: bool) -> dict:
    path = out / f"{part}-s{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    s = SETTINGS[part]
    problem = load(part, seed)
    names = [t.name for t in problem.tasks]
    t0 = time.process_time()
    cfg = MultiTaskConfig(epochs=s["epochs"], batch_size=64, lr=s["lr"], seed=seed, progress=False)
    tag, _ = tag_affinity(problem, s["backbone"], s["kwargs"], cfg, s["head_hidden"], s["every"])
    tag_cpu = time.process_time() - t0
    ranked = rank_groupings(tag.matrix, names, 2)
    result = {"part": part, "seed": seed, "tasks": names, "tag": tag.to_dict() | {"history": []},
              "tag_cpu_s": round(tag_cpu, 1), "tag_top_pairs_right": top_pairs_right(tag, s["true_pairs"]),
              "tag_split": ranked[0].to_dict(), "tag_split_right": same_split(ranked[0].groups, s["true_pairs"]),
              "worst_split": ranked[-1].to_dict()}
    if transfer:
        t0 = time.process_time()
        tm = transfer_matrix(problem, s["backbone"], s["kwargs"], TransferConfig(
            source_epochs=s["source_epochs"], target_samples=s["target_samples"], val_samples=200,
            target_epochs=s["target_epochs"], lr=s["lr"], head_hidden=s["head_hidden"], seed=seed, progress=False))
        aff = tm.affinity()
        tsplit = rank_groupings(aff.matrix, names, 2)[0]
        result.update({"transfer": tm.to_dict(), "transfer_cpu_s": round(time.process_time() - t0, 1),
                       "transfer_top_pairs_right": top_pairs_right(aff, s["true_pairs"]),
                       "transfer_split": tsplit.to_dict(),
                       "transfer_split_right": same_split(tsplit.groups, s["true_pairs"])})
        if docs_img and seed == 0:
            plot_affinity(ROOT / "docs" / "img" / f"affinity_{part}_transfer.png", tm.gain, names,
                          f"transfer gain, {part} (seed 0)", "source task", "target task",
                          value_label="(scratch - transfer) / scratch")
    if docs_img and seed == 0:
        plot_affinity(ROOT / "docs" / "img" / f"affinity_{part}_tag.png", tag.matrix, names,
                      f"TAG affinity, {part} (seed 0)", "lookahead on task i", "loss of task j",
                      value_label="Z[i][j]")
    ccfg = MultiTaskConfig(epochs=s["epochs"], batch_size=64, lr=s["lr"], seed=seed, progress=False)
    splits = {"tag_split": [list(g) for g in ranked[0].groups], "worst_split": [list(g) for g in ranked[-1].groups],
              "one_network": [names]}
    result["compare"] = {}
    for key, groups in splits.items():
        t0 = time.process_time()
        res = train_groups(problem, groups, s["backbone"], s["kwargs"], ccfg, s["head_hidden"])
        res["cpu_s"] = round(time.process_time() - t0, 1)
        result["compare"][key] = res
        print(f"  {part} seed {seed} {key}: {groups} mean loss {res['mean_loss']:.4f}", flush=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def fmt(values, scale=1.0, digits=3) -> str:
    values = [v * scale for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def table(part: str, results: list[dict]) -> list[str]:
    s = SETTINGS[part]
    names = results[0]["tasks"]
    metric = "MSE" if part == "correlated" else "acc. (%)"
    scale = 1.0 if part == "correlated" else 100.0
    lines = [f"#### {part} (seeds {[r['seed'] for r in results]})", "",
             f"True related pairs: {', '.join('~'.join(p) for p in s['true_pairs'])}.", ""]
    lines.append(f"- TAG ranks the related pairs highest: {sum(r['tag_top_pairs_right'] for r in results)}/"
                 f"{len(results)} seeds; TAG's best 2-split is the true one: "
                 f"{sum(r['tag_split_right'] for r in results)}/{len(results)} "
                 f"(TAG CPU s per run: {fmt([r['tag_cpu_s'] for r in results], digits=0)})")
    with_tm = [r for r in results if "transfer" in r]
    if with_tm:
        lines.append(f"- Transfer matrix ranks the related pairs highest: "
                     f"{sum(r['transfer_top_pairs_right'] for r in with_tm)}/{len(with_tm)} seeds; its best 2-split "
                     f"is the true one: {sum(r['transfer_split_right'] for r in with_tm)}/{len(with_tm)} "
                     f"(CPU s per run: {fmt([r['transfer_cpu_s'] for r in with_tm], digits=0)})")
    lines += ["", f"| training | {' | '.join(f'{n} {metric}' for n in names)} | mean test loss | parameters |",
              "|---|" + "---|" * (len(names) + 2)]
    labels = {"tag_split": "TAG-suggested 2 groups", "worst_split": "worst 2-split by TAG",
              "one_network": "all tasks, one hard-shared network"}
    for key, label in labels.items():
        cells = [fmt([r["compare"][key]["metrics"][n] for r in results], scale, 3 if scale == 1 else 1)
                 for n in names]
        lines.append(f"| {label} | {' | '.join(cells)} | {fmt([r['compare'][key]['mean_loss'] for r in results])} | "
                     f"{results[0]['compare'][key]['parameters']:,} |")
    splits = "; ".join(f"seed {r['seed']}: TAG " + " / ".join("+".join(g) for g in r["tag_split"]["groups"])
                       + ", worst " + " / ".join("+".join(g) for g in r["worst_split"]["groups"]) for r in results)
    lines += ["", f"Splits: {splits}.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/benchmarks/affinity")
    parser.add_argument("--parts", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--transfer-seeds", type=int, nargs="+", default=None,
                        help="seeds that also measure a transfer matrix (default: all)")
    parser.add_argument("--docs-img", action="store_true", help="write the seed-0 heatmaps to docs/img/")
    opts = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for part in opts.parts:
        if part == "omniglot-sides" and not (OMNIGLOT / "images_background_small1.zip").is_file():
            print(f"SKIP {part}: real data not available ({OMNIGLOT} is absent)")
            continue
        results = []
        for seed in opts.seeds:
            transfer = opts.transfer_seeds is None or seed in opts.transfer_seeds
            results.append(run_part(part, seed, out, transfer, opts.docs_img))
        lines += table(part, results)
    text = "\n".join(lines)
    print(text)
    (out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
