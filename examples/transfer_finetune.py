"""Transfer learning, step by step: save named layers, restore some, freeze them, cache, fine-tune.

Runs on the built-in procedural glyphs (no download): a conv4 is pre-trained on 60 source classes,
then transferred to 20 new classes with 5 labelled drawings each.

    python examples/transfer_finetune.py --out runs/example_transfer        # a few minutes on CPU
    python examples/transfer_finetune.py --smoke --out /tmp/example_transfer  # a few seconds

1. pre-train and save the model with its names and metadata;
2. restore only blocks 1-3 into a fresh model by a name pattern (TensorFlow's ``scope='hidden[123]'``);
3. freeze them, cache their outputs once and train block4 + a new head on the cache;
4. compare with a linear probe and a full fine-tune (new head, SGD momentum 0.9, StepLR);
5. ask the advisor, with the measured proxy A-distance between source and target.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mtl.backbones import create_backbone
from mtl.training import evaluate_classifier, train_classifier
from mtl.transfer import (
    RULES,
    FeatureCache,
    FineTuneRecipe,
    advise,
    build_from_checkpoint,
    distance_extractor,
    fine_tune,
    freeze,
    load_partial,
    measure_distance,
    save_named_checkpoint,
    train_on_features,
    trunk_layers,
)
from mtl.transfer.problems import make_transfer_problem


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/example_transfer", help="folder for the checkpoint and summary.json")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: finishes in seconds")
    p.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "summary.json").exists() and not args.overwrite:
        raise SystemExit(f"{out}/summary.json exists; pass --overwrite or choose another --out")
    hidden, src_classes, src_epochs, epochs = (8, 12, 1, 3) if args.smoke else (32, 60, 8, 25)
    problem = make_transfer_problem("glyphs", shots=5, seed=0, source_classes=src_classes,
                                    target_classes=6 if args.smoke else 20)
    print(f"source: {problem.source.num_classes} classes, {len(problem.source)} drawings; target: "
          f"{problem.target_train.num_classes} classes, {len(problem.target_train)} train / "
          f"{len(problem.target_test)} test drawings")

    # 1. pre-train on the source and save every tensor under its name, with how to rebuild the model
    torch.manual_seed(0)
    source = create_backbone("conv4", hidden=hidden, num_classes=problem.source.num_classes)
    train_classifier(source, problem.source, epochs=src_epochs, lr=3e-3, progress=False)
    ckpt = save_named_checkpoint(out / "source.pt", source, extra={"source": problem.info}, overwrite=args.overwrite)
    print(f"1. saved {ckpt} (rebuilds as {type(build_from_checkpoint(ckpt)).__name__})")

    # 2. a fresh model for the target; restore only blocks 1-3 by a pattern over the names
    target = create_backbone("conv4", hidden=hidden, num_classes=problem.target_train.num_classes)
    report = load_partial(target, ckpt, r"^features\.block[123]\.")
    print(f"2. {report.summary()}")

    # 3. freeze what was restored, cache the frozen part's outputs once, train block4 + head on them
    frozen = freeze(target, r"^features\.block[123]\.")
    cache = FeatureCache()
    recipe = FineTuneRecipe(epochs=epochs, lr=0.05)
    opt, sched = recipe.build(target)
    start = time.perf_counter()
    train_on_features(target, "block3", problem.target_train, cache=cache, optimizer=opt, scheduler=sched,
                      epochs=recipe.epochs, batch_size=recipe.batch_size, progress=False)
    acc_partial = evaluate_classifier(target, problem.target_test)["accuracy"]
    print(f"3. froze {len(frozen)} tensors; trained block4 + head on cached features in "
          f"{time.perf_counter() - start:.1f}s (cache misses {cache.misses}): test accuracy {100 * acc_partial:.1f}%")

    # 4. the other strategies, from the same source model (head replaced: resnet18's fc -> Linear(num_ftrs, k))
    results = {"partial:block4 (restored blocks 1-3)": acc_partial}
    for strategy in ("linear_probe", "full"):
        model = build_from_checkpoint(ckpt)
        fine_tune(model, problem.target_train, strategy, recipe=recipe, seed=0)
        results[strategy] = evaluate_classifier(model, problem.target_test)["accuracy"]
        print(f"4. {strategy}: test accuracy {100 * results[strategy]:.1f}%")

    # 5. the advisor, from the target size and the measured source/target distance
    distance = measure_distance(distance_extractor(source, RULES["calibrated"].measure), problem.source.images,
                                problem.target_pool)
    advice = advise(5, distance, trunk_layers(source))
    print(f"5. advice: {advice.strategy} [{advice.regime}] (proxy A-distance {distance:.2f})")
    summary = {"restore": report.as_dict(), "accuracy": results, "advice": advice.as_dict(),
               "checkpoint": str(ckpt), "problem": problem.info}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
