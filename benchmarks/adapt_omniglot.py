"""Domain adaptation on Omniglot: characters as drawn -> the same characters over colour textures.

Source: the 242 characters of the two small background subsets of Omniglot (Lake et al. 2015) at
28x28, drawers 1-8, labelled. Target: drawers 9-15 of the same characters under the toolkit's
MNIST-M-style shift (``make_target_domain(..., "mnistm", seed=0)``: strokes blended over
procedural colour textures), unlabelled except for the target-supervised upper bound. Test:
drawers 16-20 in both domains. Rows: source-only, AdaBN (Li et al. 2016, a no-training control),
DANN (Ganin and Lempitsky 2015), ADDA (Tzeng et al. 2017, started from the source-only model) and
target-supervised; each with target accuracy, the share of the source-only -> upper-bound gap it
recovers, and the proxy A-distance between source and target test features (d_A before = the
source-only row). Same steps for every method; conv4 of width 32 with 3 blocks (288 features;
``--num-blocks 4`` gives the usual 32), Adam.

    python benchmarks/adapt_omniglot.py --seeds 0,1,2 --steps 600 --num-blocks 3 --out runs/adapt_omniglot_nb3x3

Prints a Markdown table (mean +- std over seeds) and writes ``adapt_omniglot.json`` and
``adapt_omniglot_features.png`` (2-D PCA of the test features, seed 0, before and after
adaptation). Skips with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from bench_stats import mean_std_present as mean_std

from mtl.adaptation import (
    METHODS,
    AdaptConfig,
    extract_features,
    make_domain_split,
    plot_domain_features,
    run_methods,
)
from mtl.data import load_omniglot

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent / "shared" / "data" / "omniglot-original"
SUBSETS = ("background_small1", "background_small2")


def _pm(ms: tuple[float, float], scale: float = 100.0, digits: int = 1) -> str:
    return "-" if math.isnan(ms[0]) else f"{ms[0] * scale:.{digits}f} ± {ms[1] * scale:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--shift", default="mnistm")
    parser.add_argument("--classes", type=int, default=None, help="keep only the first N characters")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--num-blocks", type=int, default=3, help="conv4 blocks (3 gives 288 features, 4 gives 32)")
    parser.add_argument("--lr-anneal", action="store_true", help="DANN: Ganin's learning-rate schedule")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--translate", type=int, default=2)
    parser.add_argument("--domain-weight", type=float, default=1.0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default="runs/adapt_omniglot")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not (Path(args.root) / f"images_{SUBSETS[0]}.zip").is_file():
        print(f"skipped: Omniglot zips not found in {args.root}")
        return 0
    command = "python benchmarks/adapt_omniglot.py " + shlex.join(sys.argv[1:])
    data = load_omniglot(args.root, subsets=SUBSETS)
    if args.classes:
        data = data.with_classes(range(args.classes))
        data = type(data)(data.images, data.targets, data.class_names[:args.classes], data.attributes,
                          data.attribute_names)
    split = make_domain_split(data, args.shift, shift_seed=0)
    print(f"{command}\n{split.info}", flush=True)
    methods = [m for m in args.methods.split(",") if m]
    runs, start_cpu = [], time.process_time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        config = AdaptConfig(steps=args.steps, batch_size=64, lr=args.lr, translate=args.translate, seed=seed,
                             log_every=max(1, args.steps // 10), progress=False)
        kwargs = {"hidden": args.hidden, "num_blocks": args.num_blocks}
        metrics, results = run_methods(split, methods, backbone_kwargs=kwargs, config=config,
                                       dann={"domain_weight": args.domain_weight, "lr_anneal": args.lr_anneal},
                                       log=lambda m, seed=seed: print(f"  seed {seed} {m}", flush=True))
        runs.append({"seed": seed, "methods": metrics,
                     "histories": {k: r.history for k, r in results.items()}})
        if seed == int(args.seeds.split(",")[0]):
            panels = [("before (source-only)", extract_features(results["source-only"].source_model,
                                                                split.source_test.images),
                       extract_features(results["source-only"].model, split.target_test.images))]
            panels += [(f"after ({m})", extract_features(results[m].source_model, split.source_test.images),
                        extract_features(results[m].model, split.target_test.images))
                       for m in ("dann", "adda") if m in results]
            plot_domain_features(out / "adapt_omniglot_features.png", panels, seed=0,
                                 title="Omniglot -> textured Omniglot: test features (PCA, seed 0)")
    cpu = time.process_time() - start_cpu
    summary = {}
    lines = [f"`{command}` ({len(runs)} seeds, {cpu:.0f} CPU s)", "",
             "| method | target accuracy % | source accuracy % | gap recovered % | d_A (source vs target features) |",
             "|---|---|---|---|---|"]
    for m in ["source-only"] + [x for x in METHODS if x in methods and x != "source-only"]:
        rows = [r["methods"][m] for r in runs]
        summary[m] = {k: mean_std([row.get(k, math.nan) for row in rows])
                      for k in ("target_accuracy", "source_accuracy", "gap_recovered", "a_distance")}
        s = summary[m]
        lines.append(f"| {m} | {_pm(s['target_accuracy'])} | {_pm(s['source_accuracy'])} | "
                     f"{_pm(s['gap_recovered'], digits=0)} | {_pm(s['a_distance'], 1.0, 2)} |")
    table = "\n".join(lines)
    print(table)
    (out / "adapt_omniglot.json").write_text(json.dumps({"command": command, "data": split.info, "cpu_seconds": cpu,
                                                         "summary": summary, "runs": runs}, indent=2) + "\n")
    (out / "adapt_omniglot.md").write_text(table + "\n")
    print(f"wrote {out / 'adapt_omniglot.json'}, {out / 'adapt_omniglot_features.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
