"""bfloat16 autocast against float32 meta-training: speed, meta-gradient agreement, accuracy.

Three measurements, each with float32 and bfloat16 side by side in one process:

1. **speed**: CPU seconds of one meta-update (``outer_backward`` + Adam step) on Omniglot-sized
   tasks (28x28, conv4 with 64 filters): ProtoNet 60-way 1-shot episodes with 5 queries,
   and MAML 5-way and 20-way 1-shot, meta-batch 4, one inner step. Repeats alternate between
   the two precisions (a busy machine slows both alike); medians over repeats; one thread.
2. **meta-gradient agreement**: cosine between the bf16 and the fp32 meta-gradient of the same
   tasks from the same weights, over all weights but the conv biases (a bias followed by
   BatchNorm has no gradient: both are rounding noise there).
3. **accuracy**: ``run_fewshot`` for the same number of meta-iterations and seed in each
   precision on the built-in glyphs (5-way 1-shot, 600 test tasks, tested in float32), so
   that a loss of accuracy per iteration would show.

    .venv/bin/python benchmarks/precision_fewshot.py --json runs/precision.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meta import MAML, ProtoNet  # noqa: E402
from meta.fewshot import FewShotConfig, run_fewshot  # noqa: E402
from mtl import create_backbone  # noqa: E402
from mtl.utils import Budget  # noqa: E402
from mtl.utils.precision import autocast, bf16_is_native  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def strokes(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Sparse binary images (about a fifth of the pixels on), like Omniglot's pen strokes."""
    return (torch.rand(*shape, generator=gen) > 0.8).float()


def task_batch(ways: int, tasks: int, queries: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    sx, qx = strokes((tasks, ways, 1, 28, 28), g), strokes((tasks, ways * queries, 1, 28, 28), g)
    sy = torch.arange(ways).expand(tasks, -1).contiguous()
    qy = torch.arange(ways).repeat_interleave(queries).expand(tasks, -1).contiguous()
    return sx, sy, qx, qy


def learners() -> dict[str, tuple]:
    def conv4(classes: int | None) -> torch.nn.Module:
        torch.manual_seed(0)
        maml = {} if classes is None else {"track_running_stats": False}  # MAML: batch statistics only
        return create_backbone("conv4", in_channels=1, image_size=28, num_classes=classes, **maml)

    return {
        "protonet 60-way": (lambda: ProtoNet(conv4(None)), task_batch(60, 1, 5, 1)),
        "maml 5-way, meta-batch 4": (lambda: MAML(conv4(5), inner_lr=0.4), task_batch(5, 4, 15, 2)),
        "maml 20-way, meta-batch 4": (lambda: MAML(conv4(20), inner_lr=0.4), task_batch(20, 4, 5, 3)),
    }


def meta_gradient(algo: torch.nn.Module, tasks: tuple[torch.Tensor, ...], precision: str) -> torch.Tensor:
    algo.zero_grad(set_to_none=True)
    with autocast("cpu", precision):
        algo.outer_backward(*tasks)
    return torch.cat([p.grad.flatten() for n, p in algo.named_parameters()
                      if p.grad is not None and not n.endswith("conv.bias")])


def speed_and_agreement(repeats: int) -> list[dict]:
    rows = []
    for name, (build, tasks) in learners().items():
        algo = build()
        opt = torch.optim.Adam(algo.parameters(), lr=0.0)  # lr 0: every repeat sees the same weights
        grads = {p: meta_gradient(algo, tasks, p) for p in PRECISIONS}
        cosine = float(F.cosine_similarity(grads["fp32"], grads["bf16"], dim=0))
        times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        for _ in range(repeats):
            for p in PRECISIONS:
                start = time.process_time()
                meta_gradient(algo, tasks, p)
                opt.step()
                times[p].append(time.process_time() - start)
        fp32, bf16 = (statistics.median(times[p]) for p in PRECISIONS)
        rows.append({"learner": name, "fp32_seconds": fp32, "bf16_seconds": bf16, "speedup": fp32 / bf16,
                     "gradient_cosine": cosine})
        print(f"{name}: {fp32:.3f} s fp32, {bf16:.3f} s bf16 per meta-update ({fp32 / bf16:.2f}x); "
              f"meta-gradient cosine {cosine:.3f}", flush=True)
    return rows


def accuracy(iterations: int, test_tasks: int) -> list[dict]:
    rows = []
    for algo, extra in (("protonet", {"train_ways": 20}), ("maml", {"meta_batch": 4, "inner_lr": 0.4})):
        for p in PRECISIONS:
            cfg = FewShotConfig(algo=algo, precision=p, shots=1, queries=5, test_tasks=test_tasks,
                                validate_every=iterations, validation_tasks=50, **extra)
            start = time.process_time()
            res = run_fewshot(cfg, Budget(iterations=iterations), progress=False, log=lambda s: None)
            rows.append({"algorithm": algo, "precision": p, "meta_iterations": res["meta_iterations"],
                         "accuracy": res["accuracy"], "ci95": res["ci95"],
                         "cpu_seconds": time.process_time() - start})
            print(f"{algo} {p}: {100 * res['accuracy']:.2f} +- {100 * res['ci95']:.2f} % after "
                  f"{res['meta_iterations']} meta-iterations", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=300, help="meta-iterations of each accuracy run")
    parser.add_argument("--test-tasks", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bfloat16 in hardware: {bf16_is_native('cpu')}")
    result = {"threads": args.threads, "bf16_native": bf16_is_native("cpu"),
              "speed": speed_and_agreement(args.repeats)}
    if not args.skip_accuracy:
        result["accuracy"] = accuracy(args.iterations, args.test_tasks)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
