"""Train tasks in groups (one hard-shared network per group) and compare with other splits.

This is the last step of task grouping (Standley et al. 2020; Fifty et al. 2021): each group of a
split gets its own hard-parameter-sharing network (Caruana 1997) trained on its tasks only, and
every task is scored by the network of its group. The split with one group is "all tasks in one
hard-shared network"; the split with ``T`` groups is single-task learning. Note that a split into
``k`` groups uses ``k`` networks, so ``k`` times the parameters and compute of one group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mtl.affinity._fit import fit_select
from mtl.errors import ConfigError
from mtl.multitask.architectures import HardSharing
from mtl.multitask.data import MultiTaskProblem
from mtl.multitask.tasks import MultiTaskData
from mtl.multitask.trainer import MultiTaskConfig

__all__ = ["restrict", "train_groups"]


def restrict(data: MultiTaskData, names: Sequence[str]) -> MultiTaskData:
    """The same samples with the targets (and masks) of the tasks ``names`` only."""
    missing = sorted(set(names) - set(data.task_names))
    if missing:
        raise ConfigError(f"tasks {missing} are not in the data (it has {data.task_names})")
    return MultiTaskData(data.inputs, {n: data.targets[n] for n in names},
                         {n: data.masks[n] for n in names if n in data.masks})


def train_groups(problem: MultiTaskProblem, groups: Sequence[Sequence[str]], backbone: str,
                 backbone_kwargs: Mapping[str, Any] | None = None, config: MultiTaskConfig | None = None,
                 head_hidden: int | None = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Train one :class:`~mtl.multitask.architectures.HardSharing` network per group; test every task.

    Each network is trained with equal loss weights and the configuration ``config`` (its
    ``select_by`` picks the best epoch on the problem's validation split), seeded with
    ``config.seed``. Returns ``{"groups", "test": {task: {metric, "loss", ...}}, "metrics": {task:
    metric}, "mean_loss", "parameters", "train_seconds"}``.
    """
    cfg = config or MultiTaskConfig()
    names = [t.name for t in problem.tasks]
    flat = [t for g in groups for t in g]
    if sorted(flat) != sorted(names) or any(len(g) == 0 for g in groups):
        raise ConfigError(f"groups {[list(g) for g in groups]} must split the tasks {names} into non-empty groups, "
                          "each task exactly once")
    specs = {t.name: t for t in problem.tasks}
    test: dict[str, dict[str, float]] = {}
    params, seconds = 0, 0.0
    for gi, group in enumerate(groups):
        tasks = [specs[n] for n in group]
        torch.manual_seed(cfg.seed * 7919 + gi)
        model = HardSharing(tasks, backbone, backbone_kwargs, head_hidden)
        params += sum(p.numel() for p in model.parameters())
        trainer, summary = fit_select(model, tasks, restrict(problem.train, group), restrict(problem.val, group),
                                      cfg, device)
        seconds += summary["train_seconds"]
        test.update(trainer.evaluate(restrict(problem.test, group)))
    losses = [test[n]["loss"] for n in names if math.isfinite(test[n]["loss"])]
    return {"groups": [list(g) for g in groups], "test": {n: test[n] for n in names},
            "metrics": {t.name: test[t.name][t.metric_name] for t in problem.tasks},
            "mean_loss": sum(losses) / len(losses) if losses else math.nan,
            "parameters": params, "train_seconds": round(seconds, 3)}
