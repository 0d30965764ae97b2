"""bfloat16 autocast against float32 in the supervised loop (``train_classifier``): speed and accuracy.

Two measurements, float32 and bfloat16 side by side in one process:

1. **speed**: CPU seconds per optimizer step of :func:`mtl.training.train_classifier` training a
   conv4 (64 filters) classifier of 28x28 built-in glyphs over 200 classes, at batch sizes 64 and
   256. Repeats alternate between the two precisions (a busy machine slows both alike); medians
   over repeats; one thread.
2. **accuracy**: the same seed and number of epochs in each precision, tested in float32 on held-out
   drawings: a conv4 (32 filters) classifier of 100 glyph classes (15 drawings each for training,
   5 for test), and a 16-filter student distilled from that float32 classifier (T=4, alpha=0.5)
   in each precision (the KD loss itself stays float32).

    .venv/bin/python benchmarks/precision_supervised.py --json runs/precision_supervised.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtl import create_backbone  # noqa: E402
from mtl.data import LabelledImages, make_glyphs  # noqa: E402
from mtl.distill import DistillConfig, distill  # noqa: E402
from mtl.training import evaluate_classifier, train_classifier  # noqa: E402
from mtl.utils import Budget  # noqa: E402
from mtl.utils.precision import bf16_is_native  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def conv4(classes: int, hidden: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_backbone("conv4", in_channels=1, image_size=28, hidden=hidden, num_classes=classes)


def split(data: LabelledImages, test_per_class: int) -> tuple[LabelledImages, LabelledImages]:
    position = torch.empty_like(data.targets)
    for cls in range(data.num_classes):
        members = torch.nonzero(data.targets == cls).flatten()
        position[members] = torch.arange(len(members))
    test = position >= 20 - test_per_class
    return data.select(~test), data.select(test)


def step_seconds(data: LabelledImages, batch: int, precision: str, steps: int) -> float:
    model = conv4(data.num_classes, 64)
    train_classifier(model, data, epochs=1, batch_size=batch, budget=Budget(iterations=2), progress=False,
                     precision=precision)  # warm-up: first-call allocations and kernel choices
    start = time.process_time()
    history = train_classifier(model, data, epochs=100, batch_size=batch, budget=Budget(iterations=steps),
                               progress=False, precision=precision)
    return (time.process_time() - start) / history.steps


def speed(repeats: int, steps: int) -> list[dict]:
    data = make_glyphs(200, samples_per_class=20, seed=0)
    rows = []
    for batch in (64, 256):
        times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        for _ in range(repeats):
            for precision in PRECISIONS:
                times[precision].append(step_seconds(data, batch, precision, steps))
        fp32, bf16 = (statistics.median(times[p]) for p in PRECISIONS)
        rows.append({"batch": batch, "fp32_s": fp32, "bf16_s": bf16, "speedup": fp32 / bf16})
        print(f"batch {batch}: fp32 {fp32:.4f} s, bf16 {bf16:.4f} s per step, {fp32 / bf16:.2f}x", flush=True)
    return rows


def accuracy(epochs: int) -> list[dict]:
    train, test = split(make_glyphs(100, samples_per_class=20, seed=0), 5)
    rows = []
    teachers = {}
    for precision in PRECISIONS:
        model = conv4(train.num_classes, 32)
        train_classifier(model, train, epochs=epochs, batch_size=64, lr=3e-3, progress=False, precision=precision)
        acc = evaluate_classifier(model, test)["accuracy"]
        teachers[precision] = model
        rows.append({"model": "conv4-32 classifier", "precision": precision, "accuracy": acc})
        print(f"classifier {precision}: {100 * acc:.2f}%", flush=True)
    for precision in PRECISIONS:
        cfg = DistillConfig(temperature=4.0, alpha=0.5, epochs=epochs, batch_size=64, lr=3e-3, precision=precision)
        res = distill(teachers["fp32"], lambda: conv4(train.num_classes, 16, seed=1), train, cfg, test=test)
        rows.append({"model": "conv4-16 student (KD from the fp32 classifier)", "precision": precision,
                     "accuracy": res.accuracy, "agreement": res.agreement})
        print(f"student {precision}: {100 * res.accuracy:.2f}% (agreement {100 * res.agreement:.2f}%)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per repeat")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of the accuracy runs")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"bf16 in hardware: {bf16_is_native('cpu')}; torch {torch.__version__}; one thread", flush=True)
    result = {"bf16_native": bf16_is_native("cpu"), "torch": torch.__version__,
              "speed": speed(args.repeats, args.steps), "accuracy": accuracy(args.epochs),
              "command": " ".join(sys.argv)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
