"""Shared helpers for the few-shot tests: easy synthetic few-shot tasks."""

import torch

from mtl import create_backbone


def gaussian_tasks(gen, tasks, ways=5, shots=5, queries=10, informative=4, nuisance=6):
    """Few-shot tasks: per-task random class centres in a few dims plus high-variance noise dims."""
    centres = torch.randn(tasks, ways, informative, generator=gen)

    def draw(n):
        y = torch.arange(ways).repeat_interleave(n)
        signal = centres[:, y] + 0.3 * torch.randn(tasks, ways * n, informative, generator=gen)
        noise = 2.0 * torch.randn(tasks, ways * n, nuisance, generator=gen)
        return torch.cat([signal, noise], -1), y.expand(tasks, -1).contiguous()

    sx, sy = draw(shots)
    qx, qy = draw(queries)
    return sx, sy, qx, qy


def mean_accuracy(algo, tasks):
    n = tasks[0].shape[0]
    return sum(algo.evaluate_task(*(t[b] for t in tasks))["accuracy"] for b in range(n)) / n


def tiny_conv(dtype=torch.float64, classes=3):
    return create_backbone("conv4", in_channels=1, image_size=16, hidden=4, num_classes=classes,
                           track_running_stats=False).to(dtype)


def make_tasks(shape, tasks=2, n_support=6, n_query=9, classes=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(tasks, n_support, *shape, generator=g, dtype=dtype)
    qx = torch.randn(tasks, n_query, *shape, generator=g, dtype=dtype)
    sy = torch.arange(n_support).remainder(classes).expand(tasks, -1).contiguous()
    qy = torch.randint(0, classes, (tasks, n_query), generator=g)
    return sx, sy, qx, qy


def tiny_checkpoints(tmp_path, algos=("protonet", "fomaml")):
    """Train each algorithm for one meta-iteration on tiny glyph tasks with the CLI; their best.pt paths."""
    from mtl.cli import main

    tiny = ["--glyph-classes", "12,6,6", "--backbone-kwargs", '{"hidden": 8}', "--queries", "3",
            "--validation-tasks", "4", "--test-tasks", "6", "--no-progress", "--threads", "1"]
    for algo in algos:
        assert main(["fewshot", "train", "--algo", algo, "--budget-iterations", "1", "--meta-batch", "1",
                     "--out", str(tmp_path / algo), *tiny]) == 0
    return {algo: str(tmp_path / algo / "best.pt") for algo in algos}
