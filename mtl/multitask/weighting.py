"""Loss weighting and gradient combination for multi-task training, separate from the architectures.

A :class:`Weighting` turns the per-task losses of one batch into parameter gradients
(:meth:`Weighting.backward`). Methods that only rescale losses (equal, fixed, uncertainty, DWA,
GradNorm) run one backward pass of the weighted sum. Methods that manipulate per-task gradients
(PCGrad, MGDA, CAGrad) compute those gradients only over the model's *shared* parameters
(:meth:`~mtl.multitask.architectures.MultiTaskModel.shared_parameters`); task-specific
parameters get the plain gradient of their own task's loss. GradNorm needs per-task gradient
norms over the last shared layer only. Any weighting works with any architecture; where a model
has no shared parameters (independent or softly tied columns) the gradient methods reduce to the
plain sum, with a warning.

Implemented: :class:`EqualWeighting`, :class:`FixedWeighting`, :class:`UncertaintyWeighting`
(Kendall et al. 2018), :class:`GradNorm` (Chen et al. 2018), :class:`DWA` (Liu et al. 2019),
:class:`PCGrad` (Yu et al. 2020), :class:`MGDA` (Sener and Koltun 2018) and :class:`CAGrad`
(Liu et al. 2021).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mtl.errors import ConfigError
from mtl.multitask.tasks import TaskSpec, check_names

__all__ = [
    "CAGrad",
    "DWA",
    "EqualWeighting",
    "FixedWeighting",
    "GradNorm",
    "MGDA",
    "PCGrad",
    "UncertaintyWeighting",
    "WEIGHTINGS",
    "Weighting",
    "cagrad_direction",
    "make_weighting",
    "min_norm_weights",
    "pcgrad_combine",
    "task_gradients",
]


def _finite_number(name: str, value: object, minimum: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        raise ConfigError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return float(value)


def task_gradients(losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-task gradients ``[T, P]`` of ``losses`` over ``params``, flattened (zeros where unused).

    The graph is kept so that a final backward pass can follow.
    """
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
        rows.append(torch.cat([
            (g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)
        ]))
    return torch.stack(rows)


def pcgrad_combine(grads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Projecting conflicting gradients (PCGrad, Yu et al. 2020): the combined gradient ``[P]``.

    For each task ``i`` (a copy ``g_i'`` of its gradient) and each other task ``j`` in random
    order: if ``g_i' . g_j < 0``, remove from ``g_i'`` its component along ``g_j``
    (``g_i' -= (g_i' . g_j) / ||g_j||^2 g_j``). The result is ``sum_i g_i'``; gradients that do
    not conflict are left unchanged.
    """
    n = grads.shape[0]
    projected = grads.clone()
    sq = (grads * grads).sum(1)
    for i in range(n):
        others = [j for j in torch.randperm(n, generator=generator).tolist() if j != i]
        for j in others:
            dot = torch.dot(projected[i], grads[j])
            if dot < 0 and sq[j] > 0:
                projected[i] = projected[i] - dot / sq[j] * grads[j]
    return projected.sum(0)


def min_norm_weights(gram: torch.Tensor, iterations: int = 250, tol: float = 1e-7) -> torch.Tensor:
    """Convex weights ``alpha`` minimising ``||sum_t alpha_t g_t||^2`` given the Gram matrix ``G G^T``.

    The min-norm subproblem of MGDA (Sener and Koltun 2018): exact for two tasks, Frank-Wolfe
    with exact line search otherwise.
    """
    n = gram.shape[0]
    gram = gram.double()
    if n == 1:
        return torch.ones(1, dtype=gram.dtype)
    if n == 2:
        a, b, c = gram[0, 0], gram[0, 1], gram[1, 1]
        denom = a - 2 * b + c
        gamma = torch.tensor(0.5, dtype=gram.dtype) if denom <= 0 else ((c - b) / denom).clamp(0.0, 1.0)
        return torch.stack([gamma, 1 - gamma])
    alpha = torch.full((n,), 1.0 / n, dtype=gram.dtype)
    for _ in range(iterations):
        m_alpha = gram @ alpha
        t = int(torch.argmin(m_alpha))
        vv, vt, tt = alpha @ m_alpha, m_alpha[t], gram[t, t]
        denom = vv - 2 * vt + tt
        if vv - vt <= tol or denom <= 0:
            break
        gamma = float(((vv - vt) / denom).clamp(0.0, 1.0))
        alpha = (1 - gamma) * alpha
        alpha[t] += gamma
        if gamma < tol:
            break
    return alpha


def _project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto the probability simplex (sort-based, exact)."""
    u, _ = torch.sort(v, descending=True)
    css = torch.cumsum(u, 0) - 1
    ks = torch.arange(1, v.numel() + 1, dtype=v.dtype)
    rho = int((u - css / ks > 0).nonzero().max())
    theta = css[rho] / (rho + 1)
    return (v - theta).clamp_min(0)


def cagrad_direction(grads: torch.Tensor, c: float = 0.5, iterations: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Conflict-averse gradient (CAGrad, Liu et al. 2021): update direction ``[P]`` and weights ``[T]``.

    With ``g0`` the average gradient and ``phi = c^2 ||g0||^2``, find ``w`` on the simplex
    minimising ``g_w . g0 + sqrt(phi) ||g_w||`` (``g_w = sum_t w_t g_t``; projected gradient
    descent on the Gram matrix), then ``d = g0 + sqrt(phi) / ||g_w|| * g_w``. ``c = 0`` gives the
    average gradient. The direction is divided by ``1 + c^2`` to keep its scale near ``g0``'s.
    """
    n = grads.shape[0]
    g = grads.double()
    gram = (g @ g.T).cpu()  # the small T x T problem is solved on the CPU, the direction where g lives
    scale = gram.diagonal().mean().clamp_min(1e-20)
    gram_n = gram / scale
    g0 = g.mean(0)
    g0_norm = (gram_n.mean() + 1e-12).sqrt()
    sqrt_phi = c * g0_norm
    gg0 = gram_n.mean(1)
    w = torch.full((n,), 1.0 / n, dtype=g.dtype)
    best_w, best = w.clone(), math.inf
    step = 0.5
    for _ in range(iterations):
        norm_w = (w @ gram_n @ w + 1e-12).sqrt()
        obj = float(w @ gg0 + sqrt_phi * norm_w)
        if obj < best:
            best, best_w = obj, w.clone()
        grad = gg0 + sqrt_phi * (gram_n @ w) / norm_w
        w = _project_simplex(w - step * grad)
    gw = best_w.to(g.device) @ g
    gw_norm = gw.norm()
    direction = g0 + (c * g0.norm() / gw_norm) * gw if gw_norm > 0 else g0
    return (direction / (1.0 + c * c)).to(grads.dtype), best_w.to(grads.dtype)


class Weighting(nn.Module):
    """Base class: equal weights, one backward pass of the sum.

    Life cycle: :meth:`bind` (once, with the task specs, before the optimizer is built: it may
    create learnable parameters), then per batch :meth:`backward` (sets ``.grad``), the
    optimizer step, :meth:`after_step`; per epoch :meth:`end_epoch`. The module's ``state_dict``
    holds everything needed to resume.
    """

    name = "equal"
    needs_task_gradients = False

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[TaskSpec] = []
        self._warned = False

    @property
    def task_names(self) -> list[str]:
        """Names of the bound tasks."""
        return [t.name for t in self.tasks]

    def bind(self, tasks: Sequence[TaskSpec]) -> None:
        """Attach the task specs (call once before training)."""
        self.tasks = list(tasks)

    def loss_weights(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weight of each present task's loss (may carry gradient, e.g. for uncertainty weighting)."""
        one = next(iter(losses.values())).new_ones(())
        return {name: one for name in losses}

    def extra_loss(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """A term added to the weighted sum (uncertainty weighting's ``log sigma``)."""
        return None

    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module,
                 extra: torch.Tensor | None = None, step: int = 0) -> dict[str, float]:
        """Backpropagate ``sum_t w_t L_t`` (+ ``extra``, e.g. soft sharing's penalty); returns the weights used."""
        weights = self.loss_weights(losses)
        total = sum(weights[n] * losses[n] for n in losses)
        more = self.extra_loss(losses)
        if more is not None:
            total = total + more
        if extra is not None:
            total = total + extra
        total.backward()
        return {n: float(w.detach()) for n, w in weights.items()}

    def after_step(self) -> None:
        """Called after the optimizer step (GradNorm renormalises its weights here)."""

    def end_epoch(self, epoch_losses: Mapping[str, float]) -> None:
        """Called with the epoch's mean training loss per task (DWA keeps a history)."""

    def current_weights(self) -> dict[str, float]:
        """The weights the next batch would use, for logging."""
        return {n: 1.0 for n in self.task_names}

    def _fallback_warning(self, why: str) -> None:
        if not self._warned:
            warnings.warn(f"{self.name}: {why}; using the plain sum of the task losses", stacklevel=3)
            self._warned = True


class EqualWeighting(Weighting):
    """Equal weights: the plain sum of task losses (the usual multi-task baseline; Caruana 1997)."""


class FixedWeighting(Weighting):
    """Fixed, user-chosen loss weights ``w_t >= 0`` (the hand-tuned weighting of e.g. Kendall et al. 2018's baselines).

    Args:
        weights: task name -> weight; must name exactly the tasks.
    """

    name = "fixed"

    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__()
        if not isinstance(weights, Mapping) or not weights:
            raise ConfigError(f"fixed weighting needs a mapping task -> weight, got {weights!r}")
        self.weights = {str(k): _finite_number(f"fixed weight of task {k!r}", v, 0.0) for k, v in weights.items()}

    def bind(self, tasks: Sequence[TaskSpec]) -> None:
        """Check that the weights name exactly the tasks."""
        super().bind(tasks)
        check_names(self.task_names, list(self.weights), "the fixed weights")

    def loss_weights(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The given weights."""
        ref = next(iter(losses.values()))
        return {n: ref.new_tensor(self.weights[n]) for n in losses}

    def current_weights(self) -> dict[str, float]:
        """The given weights."""
        return dict(self.weights)


class UncertaintyWeighting(Weighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla 2018).

    One learnable ``s_t = log sigma_t^2`` per task (initialised to ``init``): the loss is
    ``sum_t c_t exp(-s_t) L_t + s_t / 2`` with ``c_t = 1/2`` for regression (Gaussian
    likelihood, their eq. 7) and ``c_t = 1`` for classification (softmax with temperature, eq.
    10). The ``s_t`` are trained with the model (the trainer adds them to the optimizer); the
    logged weight is ``c_t exp(-s_t)``.
    """

    name = "uncertainty"

    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        self.init = _finite_number("uncertainty init", init)
        self.log_vars = nn.ParameterDict()

    def bind(self, tasks: Sequence[TaskSpec]) -> None:
        """Create one ``log sigma^2`` per task."""
        super().bind(tasks)
        self.log_vars = nn.ParameterDict({t.name: nn.Parameter(torch.tensor(self.init)) for t in self.tasks})
        self._scale = {t.name: 0.5 if t.kind == "regression" else 1.0 for t in self.tasks}

    def loss_weights(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``c_t exp(-s_t)`` (with gradient to ``s_t``)."""
        return {n: self._scale[n] * torch.exp(-self.log_vars[n]) for n in losses}

    def extra_loss(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """``sum_t s_t / 2`` over the present tasks."""
        return sum(0.5 * self.log_vars[n] for n in losses)  # type: ignore[return-value]

    def current_weights(self) -> dict[str, float]:
        """``c_t exp(-s_t)``."""
        return {n: self._scale[n] * float(torch.exp(-self.log_vars[n].detach())) for n in self.task_names}


class GradNorm(Weighting):
    """GradNorm (Chen, Badrinarayanan, Lee and Rabinovich 2018).

    Learnable weights ``w_t`` (initialised to 1) scale the losses; they are trained to make the
    gradient norms ``G_t = ||grad_W w_t L_t||`` at the last shared layer ``W`` equal to
    ``mean(G) * r_t^alpha``, where ``r_t`` is task ``t``'s inverse training rate
    ``(L_t / L_t(0)) / mean_u (L_u / L_u(0))``. The target is held constant, the gradient of
    ``sum_t |G_t - target_t|`` is given to ``w`` (stepped by the trainer's optimizer), and after
    each step the weights are renormalised to sum to ``T``. Only gradient *norms* over ``W``
    are needed (``G_t`` is linear in ``w_t``), so no second-order graph is built.
    """

    name = "gradnorm"
    needs_task_gradients = True

    def __init__(self, alpha: float = 1.5) -> None:
        super().__init__()
        self.alpha = _finite_number("gradnorm alpha", alpha, 0.0)
        self.weights = nn.Parameter(torch.ones(0))
        self.register_buffer("initial_losses", torch.zeros(0))

    def bind(self, tasks: Sequence[TaskSpec]) -> None:
        """Create the weights and the record of initial losses."""
        super().bind(tasks)
        n = len(self.tasks)
        self.weights = nn.Parameter(torch.ones(n))
        self.initial_losses = torch.full((n,), math.nan)

    def _index(self, name: str) -> int:
        return self.task_names.index(name)

    def loss_weights(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The current weights (no gradient through them into the model loss)."""
        return {n: self.weights[self._index(n)].detach() for n in losses}

    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module,
                 extra: torch.Tensor | None = None, step: int = 0) -> dict[str, float]:
        """Set ``w.grad`` from the GradNorm objective, then backpropagate the weighted sum."""
        names = list(losses)
        idx = [self._index(n) for n in names]
        with torch.no_grad():
            for n, i in zip(names, idx):
                if math.isnan(float(self.initial_losses[i])):
                    self.initial_losses[i] = float(losses[n].detach())
        last = [p for p in getattr(model, "last_shared_parameters", list)() if p.requires_grad]
        if not last or len(names) < 2:
            if not last:
                self._fallback_warning("the model has no shared layer")
        else:
            norms = task_gradients([losses[n] for n in names], last).norm(dim=1).detach()
            w = self.weights.detach()[idx].to(norms.device)
            g = w * norms
            init = self.initial_losses[idx].to(norms.device).clamp_min(1e-12)
            ratio = torch.stack([losses[n].detach() for n in names]) / init
            target = g.mean() * (ratio / ratio.mean()).pow(self.alpha)
            grad = torch.zeros_like(self.weights)
            grad[idx] = (torch.sign(g - target) * norms).to(grad.device)
            self.weights.grad = grad if self.weights.grad is None else self.weights.grad + grad
        return super().backward(losses, model, extra, step)

    @torch.no_grad()
    def after_step(self) -> None:
        """Keep the weights positive and summing to the number of tasks."""
        self.weights.clamp_(min=1e-3)
        self.weights.mul_(len(self.tasks) / self.weights.sum())

    def current_weights(self) -> dict[str, float]:
        """The current ``w_t``."""
        return {n: float(self.weights.detach()[i]) for i, n in enumerate(self.task_names)}


class DWA(Weighting):
    """Dynamic Weight Average (Liu, Johns and Davison 2019, MTAN).

    ``lambda_t(k) = T exp(r_t / temperature) / sum_u exp(r_u / temperature)`` with
    ``r_t = L_t(k-1) / L_t(k-2)`` the ratio of task ``t``'s mean training losses over the last
    two epochs; weights are 1 for the first two epochs. Liu et al. use ``temperature = 2``.
    """

    name = "dwa"

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        self.temperature = _finite_number("dwa temperature", temperature, 0.0, strict=True)
        self.register_buffer("history", torch.zeros(0, 0))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def bind(self, tasks: Sequence[TaskSpec]) -> None:
        """Create the two-epoch loss history."""
        super().bind(tasks)
        self.history = torch.full((2, len(self.tasks)), math.nan)

    def _weights(self) -> torch.Tensor:
        n = len(self.tasks)
        if int(self.epochs_seen) < 2:
            return torch.ones(n, device=self.history.device)
        ratio = self.history[1] / self.history[0].clamp_min(1e-12)
        ratio = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
        return n * torch.softmax(ratio / self.temperature, dim=0)

    def loss_weights(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The weights from the last two epochs' losses."""
        w = self._weights()
        ref = next(iter(losses.values()))
        return {n: ref.new_tensor(float(w[self.task_names.index(n)])) for n in losses}

    @torch.no_grad()
    def end_epoch(self, epoch_losses: Mapping[str, float]) -> None:
        """Shift the history by one epoch."""
        row = torch.tensor([float(epoch_losses.get(n, math.nan)) for n in self.task_names],
                           device=self.history.device)
        self.history = torch.stack([self.history[1], row])
        self.epochs_seen += 1

    def current_weights(self) -> dict[str, float]:
        """The weights of the next epoch."""
        return {n: float(w) for n, w in zip(self.task_names, self._weights())}


class _GradientWeighting(Weighting):
    """Shared machinery: per-task gradients over shared parameters, one combined gradient there."""

    needs_task_gradients = True

    def combine(self, grads: torch.Tensor, losses: Sequence[torch.Tensor], step: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(combined gradient [P], weights [T] for logging)``."""
        raise NotImplementedError

    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module,
                 extra: torch.Tensor | None = None, step: int = 0) -> dict[str, float]:
        """Combined gradient on shared parameters, per-task gradients on the rest."""
        names = list(losses)
        shared = [p for p in getattr(model, "shared_parameters", list)() if p.requires_grad]
        if not shared or len(names) < 2:
            if not shared:
                self._fallback_warning("the model has no shared parameters")
            return super().backward(losses, model, extra, step)
        shared_ids = {id(p) for p in shared}
        others = [p for p in model.parameters() if p.requires_grad and id(p) not in shared_ids]
        grads = task_gradients([losses[n] for n in names], shared)
        combined, weights = self.combine(grads, [losses[n] for n in names], step)
        if extra is not None and extra.requires_grad:
            extra_grads = torch.autograd.grad(extra, shared, retain_graph=True, allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                              for g, p in zip(extra_grads, shared)])
            combined = combined + flat
        total = sum(losses[n] for n in names)
        if extra is not None:
            total = total + extra
        if others:
            torch.autograd.backward(total, inputs=others)
        offset = 0
        for p in shared:
            g = combined[offset:offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
            p.grad = g.clone() if p.grad is None else p.grad + g
        return {n: float(w) for n, w in zip(names, weights)}


class PCGrad(_GradientWeighting):
    """PCGrad, gradient surgery (Yu et al. 2020) on the shared parameters; see :func:`pcgrad_combine`.

    The random order of projections is drawn from ``seed`` and the step number, so runs and
    resumed runs are reproducible.
    """

    name = "pcgrad"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)

    def combine(self, grads: torch.Tensor, losses: Sequence[torch.Tensor], step: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project conflicting gradients, then sum."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return pcgrad_combine(grads, gen), torch.ones(grads.shape[0])


MGDA_NORMALIZATIONS: tuple[str, ...] = ("none", "l2", "loss", "loss+")


class MGDA(_GradientWeighting):
    """Multiple-gradient descent as multi-objective optimisation (Sener and Koltun 2018; Desideri 2012).

    The shared parameters move along ``T * sum_t alpha_t g_t`` where ``alpha`` is the min-norm
    point of the convex hull of the (normalised) task gradients (:func:`min_norm_weights`); this
    is exact MGDA over the shared parameters, not the MGDA-UB bound on the shared representation.
    Optional gradient normalisation before the min-norm problem, as offered by Sener and Koltun:
    ``"none"`` (default: plain MGDA, a common descent direction of all tasks), ``"l2"``
    (``g_t / ||g_t||``; with two tasks this always gives ``alpha = (1/2, 1/2)``, i.e. the equal
    sum), ``"loss"`` (``g_t / L_t``), ``"loss+"`` (``g_t / (L_t ||g_t||)``); ``alpha`` is then
    applied to the raw gradients. The factor ``T`` keeps the step comparable to the equal-weight sum.
    """

    name = "mgda"

    def __init__(self, normalization: str = "none") -> None:
        super().__init__()
        if normalization not in MGDA_NORMALIZATIONS:
            raise ConfigError(f"mgda normalization must be one of {', '.join(MGDA_NORMALIZATIONS)}, "
                              f"got {normalization!r}")
        self.normalization = normalization

    def combine(self, grads: torch.Tensor, losses: Sequence[torch.Tensor], step: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Min-norm combination of the normalised gradients, applied to the raw gradients."""
        scale = torch.ones(grads.shape[0], dtype=grads.dtype, device=grads.device)
        if self.normalization in ("l2", "loss+"):
            scale = scale * grads.norm(dim=1).clamp_min(1e-12)
        if self.normalization in ("loss", "loss+"):
            scale = scale * torch.stack([loss.detach() for loss in losses]).to(grads.dtype).clamp_min(1e-12)
        normed = grads / scale[:, None]
        alpha = min_norm_weights((normed @ normed.T).cpu()).to(dtype=grads.dtype, device=grads.device)
        weights = alpha * grads.shape[0]
        return weights @ grads, weights.cpu()


class CAGrad(_GradientWeighting):
    """Conflict-averse gradient descent (Liu, Liu, Jin, Stone and Liu 2021) on the shared parameters.

    See :func:`cagrad_direction`; ``c`` (default 0.5) sets how far the update may move from
    the average gradient to improve the worst task. The direction is scaled by ``T``, like the sum.
    """

    name = "cagrad"

    def __init__(self, c: float = 0.5) -> None:
        super().__init__()
        self.c = _finite_number("cagrad c", c, 0.0)

    def combine(self, grads: torch.Tensor, losses: Sequence[torch.Tensor], step: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The CAGrad direction times ``T``."""
        direction, w = cagrad_direction(grads, self.c)
        n = grads.shape[0]
        return direction * n, w * n


WEIGHTINGS: tuple[str, ...] = ("equal", "fixed", "uncertainty", "gradnorm", "dwa", "pcgrad", "mgda", "cagrad")
"""Names accepted by :func:`make_weighting` (and ``mtlmeta multitask --weighting``)."""

_CLASSES: dict[str, type[Weighting]] = {
    "equal": EqualWeighting, "fixed": FixedWeighting, "uncertainty": UncertaintyWeighting,
    "gradnorm": GradNorm, "dwa": DWA, "pcgrad": PCGrad, "mgda": MGDA, "cagrad": CAGrad,
}


def make_weighting(name: str, **options: Any) -> Weighting:
    """Build a weighting by name (one of :data:`WEIGHTINGS`) with its options.

    Options: ``weights`` (fixed), ``init`` (uncertainty, Kendall et al. 2018), ``alpha``
    (GradNorm, Chen et al. 2018), ``temperature`` (DWA, Liu et al. 2019), ``seed`` (PCGrad, Yu et
    al. 2020), ``normalization`` (MGDA, Sener and Koltun 2018), ``c`` (CAGrad, Liu et al. 2021).
    """
    if name not in _CLASSES:
        raise ConfigError(f"unknown weighting {name!r}; choose one of {', '.join(WEIGHTINGS)}")
    try:
        return _CLASSES[name](**options)
    except TypeError as exc:
        raise ConfigError(f"weighting {name!r} does not accept these options {sorted(options)}: {exc}") from None
