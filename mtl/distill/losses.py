"""The knowledge-distillation loss of Hinton, Vinyals and Dean 2015 ("Distilling the knowledge in a neural network").

``kd_loss = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))``.

The gradient of the soft term with respect to the student's logits scales as ``1 / T^2`` for a
large temperature (Hinton et al. 2015, section 2.1), so the ``T^2`` factor keeps its weight
relative to the hard term comparable when ``T`` changes. It is applied for every ``alpha``,
including ``alpha = 0`` (soft targets only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtl.errors import ConfigError

__all__ = ["REDUCTIONS", "check_alpha", "check_temperature", "kd_loss", "soft_target_loss"]

REDUCTIONS = ("mean", "sum", "none")


def check_temperature(temperature: object) -> float:
    """Refuse a distillation temperature that is not a finite number > 0; return it as a float."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
        temperature > 0 and math.isfinite(temperature)
    ):
        raise ConfigError(f"temperature must be a finite number > 0 (e.g. 4), got {temperature!r}")
    return float(temperature)


def check_alpha(alpha: object) -> float:
    """Refuse a hard-label weight outside ``[0, 1]``; return it as a float."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0 <= alpha <= 1):
        raise ConfigError(f"alpha (weight of the hard-label loss) must be in [0, 1], got {alpha!r}")
    return float(alpha)


def _check_logits(name: str, logits: object) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(f"{name} must be a float tensor [batch, classes], got {shape}")
    return logits


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    _check_logits("student_logits", student_logits)
    _check_logits("teacher_logits", teacher_logits)
    if teacher_logits.shape[1] != student_logits.shape[1]:
        raise ConfigError(f"the teacher has {teacher_logits.shape[1]} classes but the student has "
                          f"{student_logits.shape[1]}; both must predict the same classes")
    if teacher_logits.shape[0] != student_logits.shape[0]:
        raise ConfigError(f"teacher logits are for {teacher_logits.shape[0]} samples but student logits for "
                          f"{student_logits.shape[0]}")


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                     reduction: str = "mean") -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` per sample (Hinton et al. 2015).

    The teacher's logits are treated as constants (detached). ``reduction="mean"`` averages over
    the batch (the KL summed over classes, averaged over samples).
    """
    t = check_temperature(temperature)
    _check_pair(student_logits, teacher_logits)
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    log_q = F.log_softmax(student_logits / t, dim=1)
    log_p = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / t, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    return _reduce(t * t * kl, reduction)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor | None,
    temperature: float = 4.0,
    alpha: float = 0.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Knowledge-distillation loss (Hinton, Vinyals and Dean 2015).

    ``alpha * CE(student_logits, targets) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))``,
    the cross-entropy at temperature 1, the KL at temperature ``T``. ``alpha = 1`` is plain
    cross-entropy (``teacher_logits`` may then be ``None``); ``alpha = 0`` uses the soft targets
    only (``targets`` may then be ``None``), still with the ``T^2`` factor.

    Args:
        student_logits: ``[B, C]`` student outputs.
        teacher_logits: ``[B, C]`` teacher outputs (detached), or ``None`` when ``alpha == 1``.
        targets: ``[B]`` class ids, or ``None`` when ``alpha == 0``.
        temperature: ``T > 0``.
        alpha: weight of the hard-label term, in ``[0, 1]``.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"`` (per sample).

    Raises:
        ConfigError: ``T <= 0``, ``alpha`` outside ``[0, 1]``, teacher and student logits with
            different numbers of classes, or a missing input the chosen ``alpha`` needs.
    """
    t = check_temperature(temperature)
    a = check_alpha(alpha)
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    _check_logits("student_logits", student_logits)
    per = student_logits.new_zeros(student_logits.shape[0])
    if a > 0:
        if targets is None:
            raise ConfigError(f"alpha={a} weights the hard-label loss, so targets are needed (got None)")
        if targets.shape != (student_logits.shape[0],):
            raise ConfigError(f"targets must have shape [{student_logits.shape[0]}], got {tuple(targets.shape)}")
        per = per + a * F.cross_entropy(student_logits, targets, reduction="none")
    if a < 1:
        if teacher_logits is None:
            raise ConfigError(f"alpha={a} < 1 weights the soft targets, so teacher_logits are needed (got None)")
        per = per + (1 - a) * soft_target_loss(student_logits, teacher_logits, t, reduction="none")
    return _reduce(per, reduction)
