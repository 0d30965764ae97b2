"""Tutorial: unsupervised domain adaptation with DANN (Ganin and Lempitsky 2015) on built-in glyphs.

The source domain is the toolkit's procedural glyphs as drawn (white strokes on black); the target
domain is the same characters over random colour textures, generated reproducibly in the manner of
MNIST-M. A classifier trained on the source alone does poorly on the target; DANN also sees the
*unlabelled* target images and learns features a domain classifier cannot tell apart. A model
trained on the labelled target images is the upper bound. The proxy A-distance measures how far
apart the two domains' features are, before and after adaptation.

    python examples/dann.py                 # a few minutes on a CPU
    python examples/dann.py --smoke         # a few seconds (a check that everything runs)

Writes ``features.png`` (2-D PCA of source and target test features before and after) and
``results.json`` into ``--out`` (default ``runs/example_dann``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mtl.adaptation import (
    AdaptConfig,
    extract_features,
    make_domain_split,
    plot_domain_features,
    run_methods,
)
from mtl.data import make_glyphs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run, a few seconds")
    parser.add_argument("--out", default="runs/example_dann", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()

    # 1. Data: 20 drawings per glyph class; drawings 1-8 are the labelled source, 9-15 the
    #    unlabelled target (shifted), 16-20 the test set in both domains.
    full = (20, 400, {"hidden": 32, "num_blocks": 3})  # 3 blocks of 32 filters: 288 features
    classes, steps, kwargs = (3, 4, {"hidden": 8, "num_blocks": 2}) if args.smoke else full
    data = make_glyphs(classes, samples_per_class=20, seed=0)
    split = make_domain_split(data, "mnistm", shift_seed=0)
    print(f"{classes} glyph classes: {len(split.source_train)} source, {len(split.target_train)} target (unlabelled), "
          f"{len(split.target_test)} test images per domain, input {split.source_train.image_shape}")

    # 2. Source-only (the 'before'), DANN, ADDA (Tzeng et al. 2017, from the source-only model) and the
    #    target-supervised upper bound, the same number of steps each.
    config = AdaptConfig(steps=steps, batch_size=32, lr=3e-3, translate=2, seed=args.seed, progress=not args.smoke)
    metrics, results = run_methods(split, ["dann", "adda", "target-supervised"], backbone="conv4",
                                   backbone_kwargs=kwargs, config=config, log=print)

    # 3. The measured H-divergence before and after, and the share of the gap DANN recovers.
    print(f"proxy A-distance between source and target test features: before (source-only) "
          f"{metrics['source-only']['a_distance']:.2f}, after DANN {metrics['dann']['a_distance']:.2f}, "
          f"after ADDA {metrics['adda']['a_distance']:.2f}")
    print(f"target accuracy: source-only {100 * metrics['source-only']['target_accuracy']:.1f}%, "
          f"DANN {100 * metrics['dann']['target_accuracy']:.1f}%, "
          f"ADDA {100 * metrics['adda']['target_accuracy']:.1f}%, "
          f"target-supervised {100 * metrics['target-supervised']['target_accuracy']:.1f}%; "
          f"DANN recovers {100 * metrics['dann']['gap_recovered']:.0f}% of the gap, "
          f"ADDA {100 * metrics['adda']['gap_recovered']:.0f}%")

    # 4. A picture of the features before and after adaptation.
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    panels = [(f"before: {name}" if name == "source-only" else f"after: {name}",
               extract_features(results[name].source_model, split.source_test.images),
               extract_features(results[name].model, split.target_test.images))
              for name in ("source-only", "dann", "adda")]
    plot_domain_features(out / "features.png", panels, title="glyphs -> textured glyphs, test features (PCA)")
    (out / "results.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {out / 'features.png'} and {out / 'results.json'} in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
