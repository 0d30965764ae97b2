"""Task declarations, masked losses, metrics and multi-task data containers.

A multi-task problem is a list of :class:`TaskSpec` (name -> head size, loss, metric) and
:class:`MultiTaskData` holding one input tensor and one target tensor per task. Labels may be
missing for some samples (class id ``-1`` for classification, ``NaN`` for regression, or an
explicit boolean mask): :func:`masked_task_loss` then averages over the labelled samples only,
so a missing label contributes nothing to the loss or its gradient. :func:`delta_m` is the
average relative improvement over single-task baselines reported by Maninis et al. (2019) and
LibMTL (Lin and Zhang 2023).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mtl.errors import ConfigError

__all__ = [
    "HIGHER_IS_BETTER",
    "LOSSES",
    "METRICS",
    "TASK_KINDS",
    "MultiTaskData",
    "TaskSpec",
    "check_names",
    "delta_m",
    "masked_task_loss",
    "task_metric",
]

TASK_KINDS: tuple[str, ...] = ("classification", "regression")
"""The kinds of task a :class:`TaskSpec` can declare."""

LOSSES: dict[str, tuple[str, ...]] = {
    "classification": ("cross_entropy",),
    "regression": ("mse", "l1", "huber"),
}
"""Built-in loss names per task kind (the first one is the default)."""

METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy",),
    "regression": ("mse", "mae", "rmse"),
}
"""Built-in metric names per task kind (the first one is the default)."""

HIGHER_IS_BETTER: dict[str, bool] = {"accuracy": True, "mse": False, "mae": False, "rmse": False}
"""Direction of each metric, as used by :func:`delta_m`."""

PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(outputs [B, K], targets [B] or [B, K]) -> per-sample losses [B]``."""

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def _per_sample(name: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if name == "cross_entropy":
        return F.cross_entropy(output, target, reduction="none")
    if name == "mse":
        return F.mse_loss(output, target, reduction="none").flatten(1).mean(1)
    if name == "l1":
        return F.l1_loss(output, target, reduction="none").flatten(1).mean(1)
    return F.huber_loss(output, target, reduction="none").flatten(1).mean(1)


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task problem: its name, head size, loss and metric.

    Classification tasks (labels: class ids ``0..num_outputs-1``, ``-1`` = missing) default to
    cross-entropy and accuracy; regression tasks (targets ``[N, num_outputs]`` or ``[N]`` when
    ``num_outputs == 1``, ``NaN`` = missing) default to mean squared error for both. This is the
    task-to-(head, loss, metric) declaration of hard parameter sharing (Caruana 1997; Ruder 2017).

    Args:
        name: identifier of the task (letters, digits, ``_`` and ``-``; used in parameter names).
        num_outputs: size of the task's head (number of classes, or of regression outputs).
        kind: ``"classification"`` or ``"regression"``.
        loss: a name from :data:`LOSSES` for the kind, or a callable returning per-sample losses
            ``[B]`` from ``(outputs, targets)`` (called on labelled samples only).
        metric: a name from :data:`METRICS` for the kind.
    """

    name: str
    num_outputs: int
    kind: str = "classification"
    loss: str | PerSampleLoss | None = None
    metric: str | None = None
    _resolved: tuple[str | PerSampleLoss, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigError(
                f"task name {self.name!r} is not allowed; use letters, digits, '_' or '-' (not starting "
                "with a digit)"
            )
        if isinstance(self.num_outputs, bool) or not isinstance(self.num_outputs, int) or self.num_outputs < 1:
            raise ConfigError(f"task {self.name!r}: num_outputs must be a positive integer, got {self.num_outputs!r}")
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"task {self.name!r}: kind must be one of {', '.join(TASK_KINDS)}, got {self.kind!r}")
        loss = self.loss if self.loss is not None else LOSSES[self.kind][0]
        if not callable(loss) and loss not in LOSSES[self.kind]:
            raise ConfigError(
                f"task {self.name!r}: loss {loss!r} is not available for {self.kind}; "
                f"choose one of {', '.join(LOSSES[self.kind])} or pass a callable"
            )
        metric = self.metric if self.metric is not None else METRICS[self.kind][0]
        if metric not in METRICS[self.kind]:
            raise ConfigError(
                f"task {self.name!r}: metric {metric!r} is not available for {self.kind}; "
                f"choose one of {', '.join(METRICS[self.kind])}"
            )
        object.__setattr__(self, "_resolved", (loss, metric))

    @property
    def loss_name(self) -> str:
        """The loss's name (``"custom"`` for a callable)."""
        loss = self._resolved[0]
        return loss if isinstance(loss, str) else "custom"

    @property
    def metric_name(self) -> str:
        """The metric's name."""
        return self._resolved[1]

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger metric value is better (accuracy) or worse (errors)."""
        return HIGHER_IS_BETTER[self.metric_name]

    def labelled(self, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean ``[B]``: which samples carry a label (``-1``/``NaN`` and ``mask == False`` do not)."""
        if self.kind == "classification":
            valid = target >= 0
        else:
            valid = ~torch.isnan(target.reshape(target.shape[0], -1)).any(1)
        if mask is not None:
            valid = valid & mask.to(device=valid.device, dtype=torch.bool)
        return valid

    def shape_target(self, target: torch.Tensor) -> torch.Tensor:
        """Targets as the loss expects them: long ``[B]`` or float ``[B, num_outputs]``."""
        if self.kind == "classification":
            return target.long()
        flat = target.reshape(target.shape[0], -1)
        return flat if flat.is_floating_point() else flat.float()

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample losses ``[B]`` of labelled samples (no masking here)."""
        loss = self._resolved[0]
        target = self.shape_target(target)
        if callable(loss):
            return loss(output, target)
        return _per_sample(loss, output, target.to(output.dtype) if self.kind == "regression" else target)

    def check_targets(self, target: torch.Tensor, where: str = "data") -> None:
        """Raise :class:`ConfigError` when labels do not fit this task's head (``where`` names the source)."""
        if target.dim() == 0 or target.shape[0] == 0:
            return
        if self.kind == "classification":
            if target.is_floating_point() or target.dim() != 1:
                raise ConfigError(
                    f"task {self.name!r} ({where}): classification labels must be integer class ids of shape [N], "
                    f"got {target.dtype} {tuple(target.shape)}"
                )
            top = int(target.max())
            if top >= self.num_outputs:
                raise ConfigError(
                    f"task {self.name!r} ({where}): labels go up to {top} but its head has {self.num_outputs} "
                    f"outputs (allowed labels 0..{self.num_outputs - 1}, or -1 for missing)"
                )
            if int(target.min()) < -1:
                raise ConfigError(
                    f"task {self.name!r} ({where}): label {int(target.min())} is not allowed "
                    f"(0..{self.num_outputs - 1}, or -1 for missing)"
                )
        else:
            width = math.prod(target.shape[1:]) if target.dim() > 1 else 1
            if width != self.num_outputs:
                raise ConfigError(
                    f"task {self.name!r} ({where}): regression targets have {width} values per sample but its "
                    f"head has {self.num_outputs} outputs"
                )


def check_names(expected: Sequence[str], got: Sequence[str], what: str) -> None:
    """Raise :class:`ConfigError` unless ``got`` names exactly the tasks ``expected`` (any order)."""
    if sorted(expected) != sorted(got):
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unknown {extra}")
        raise ConfigError(
            f"task names of {what} do not match the tasks {sorted(expected)}: {', '.join(parts) or 'duplicates'}"
        )


def masked_task_loss(
    spec: TaskSpec, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Mean loss of one task over its labelled samples, and how many there were.

    Samples without a label (see :meth:`TaskSpec.labelled`) are left out before the loss is
    computed, so they contribute nothing to the value or its gradient (the gap in LibMTL that
    issue 4 names). With no labelled sample the loss is a zero that still belongs to the graph.
    """
    valid = spec.labelled(target, mask)
    count = int(valid.sum())
    if count == 0:
        return output.sum() * 0.0, 0
    if count == valid.numel():
        per = spec.per_sample_loss(output, target)
    else:
        per = spec.per_sample_loss(output[valid], target[valid])
    return per.sum() / count, count


@torch.no_grad()
def task_metric(spec: TaskSpec, output: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[float, int]:
    """The task's metric over its labelled samples, and how many there were (NaN when none)."""
    valid = spec.labelled(target, mask)
    count = int(valid.sum())
    if count == 0:
        return math.nan, 0
    out, tgt = output[valid], spec.shape_target(target[valid])
    name = spec.metric_name
    if name == "accuracy":
        value = (out.argmax(1) == tgt).float().mean()
    else:
        err = (out - tgt.to(out.dtype)).flatten(1)
        value = err.abs().mean() if name == "mae" else err.pow(2).mean()
        if name == "rmse":
            value = value.sqrt()
    return float(value), count


def delta_m(metrics: Mapping[str, float], baseline: Mapping[str, float], tasks: Sequence[TaskSpec]) -> float:
    """Average relative improvement over a baseline, in percent (Maninis et al. 2019; LibMTL).

    ``Delta-m = 100 / T * sum_t (-1)^{l_t} (M_t - B_t) / B_t`` with ``l_t = 1`` when a lower
    metric is better, so a positive value means better than the (single-task) baseline.
    """
    check_names([t.name for t in tasks], list(metrics), "the metrics")
    check_names([t.name for t in tasks], list(baseline), "the baseline")
    total = 0.0
    for spec in tasks:
        base = float(baseline[spec.name])
        if base == 0 or not math.isfinite(base):
            raise ConfigError(f"delta_m: baseline {spec.metric_name} of task {spec.name!r} is {base}; need a "
                              "finite non-zero value")
        sign = 1.0 if spec.higher_is_better else -1.0
        total += sign * (float(metrics[spec.name]) - base) / abs(base)
    return 100.0 * total / len(tasks)


class MultiTaskData:
    """Inputs with one target tensor (and optionally one label mask) per task, held in memory.

    Args:
        inputs: ``[N, ...]`` float tensor (images ``[N, C, H, W]`` or vectors ``[N, D]``).
        targets: task name -> ``[N]`` class ids (``-1`` = missing) or ``[N, K]`` / ``[N]`` floats
            (``NaN`` = missing).
        masks: optional task name -> bool ``[N]`` (``True`` = labelled); combined with the above.
    """

    def __init__(self, inputs: torch.Tensor, targets: Mapping[str, torch.Tensor],
                 masks: Mapping[str, torch.Tensor] | None = None) -> None:
        if inputs.dim() < 2:
            raise ConfigError(f"inputs must have shape [N, ...], got {tuple(inputs.shape)}")
        if not targets:
            raise ConfigError("a multi-task data set needs at least one task target")
        n = inputs.shape[0]
        self.inputs = inputs
        self.targets = dict(targets)
        self.masks = dict(masks or {})
        for name, value in list(self.targets.items()) + list(self.masks.items()):
            if value.shape[0] != n:
                raise ConfigError(f"target or mask {name!r} has {value.shape[0]} rows but inputs have {n}")
        unknown = sorted(set(self.masks) - set(self.targets))
        if unknown:
            raise ConfigError(f"masks given for tasks without targets: {unknown}")

    @property
    def task_names(self) -> list[str]:
        """Names of the tasks that have targets."""
        return list(self.targets)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input."""
        return tuple(self.inputs.shape[1:])

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def select(self, index: torch.Tensor) -> MultiTaskData:
        """A new set with the selected rows (bool mask or index tensor)."""
        return MultiTaskData(self.inputs[index], {k: v[index] for k, v in self.targets.items()},
                             {k: v[index] for k, v in self.masks.items()})

    def batch(self, index: torch.Tensor, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(inputs, targets, masks)`` of the rows ``index``, moved to ``device``."""
        return (self.inputs[index].to(device), {k: v[index].to(device) for k, v in self.targets.items()},
                {k: v[index].to(device) for k, v in self.masks.items()})

    def labelled_counts(self, tasks: Sequence[TaskSpec]) -> dict[str, int]:
        """How many samples carry a label, per task."""
        return {t.name: int(t.labelled(self.targets[t.name], self.masks.get(t.name)).sum()) for t in tasks}

    def check(self, tasks: Sequence[TaskSpec], where: str = "data") -> None:
        """Raise :class:`ConfigError` when task names or label ranges do not fit ``tasks``."""
        check_names([t.name for t in tasks], self.task_names, f"the {where}")
        for spec in tasks:
            spec.check_targets(self.targets[spec.name], where)

    def drop_labels(self, fraction: float | Mapping[str, float], seed: int = 0) -> MultiTaskData:
        """A copy where a random ``fraction`` of each task's labels is marked missing (independently per task).

        Used to study masked losses: the dropped labels are hidden by a mask, never altered.
        """
        if isinstance(fraction, Mapping):
            check_names(self.task_names, list(fraction), "drop_labels")
            fractions = dict(fraction)
        else:
            fractions = {k: fraction for k in self.targets}
        gen = torch.Generator().manual_seed(seed)
        masks = dict(self.masks)
        for name in self.task_names:
            frac = float(fractions[name])
            if not 0.0 <= frac < 1.0:
                raise ConfigError(f"label drop fraction for task {name!r} must be in [0, 1), got {frac!r}")
            keep = torch.rand(len(self), generator=gen) >= frac
            masks[name] = keep & masks[name] if name in masks else keep
        return MultiTaskData(self.inputs, self.targets, masks)

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        return f"MultiTaskData(samples={len(self)}, input={shape}, tasks={self.task_names})"
