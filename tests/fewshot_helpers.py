"""Shared helpers for the few-shot tests: easy synthetic few-shot tasks."""

import torch


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
