"""Sinusoid regression tasks (Finn, Abbeel and Levine, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks", ICML 2017, section 5.1).

Every task is a sine wave ``y = amplitude * sin(x - phase)`` -- the sign convention of the MAML
reference code: the phase shifts the wave to the *right* -- with the amplitude drawn from
``U[0.1, 5.0]``, the phase from ``U[0, pi]`` and the inputs from ``U[-5, 5]``.  A learner sees
``shots`` support points of a task and is scored by its mean squared error on ``queries`` query
points of the same task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from mtl.errors import ConfigError

__all__ = ["SinusoidBatch", "SinusoidTasks"]


@dataclass
class SinusoidBatch:
    """A batch of ``B`` sinusoid tasks, each with ``K`` support and ``Q`` query points.

    Attributes:
        support_x: ``[B, K, 1]`` inputs the learner adapts on.
        support_y: ``[B, K, 1]`` their targets ``amplitude * sin(x - phase)`` (plus noise).
        query_x: ``[B, Q, 1]`` inputs it is evaluated on.
        query_y: ``[B, Q, 1]`` their targets.
        amplitude: ``[B]`` each task's amplitude.
        phase: ``[B]`` each task's phase.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    amplitude: torch.Tensor
    phase: torch.Tensor

    @property
    def num_tasks(self) -> int:
        """``B``, the number of tasks."""
        return int(self.support_x.shape[0])

    @property
    def shots(self) -> int:
        """``K``, support points per task."""
        return int(self.support_x.shape[1])

    @property
    def queries(self) -> int:
        """``Q``, query points per task."""
        return int(self.query_x.shape[1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SinusoidBatch:
        """The same batch with every tensor moved to ``device``."""
        return SinusoidBatch(
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in fields(self)
            }
        )

    def __getitem__(self, index: int | slice) -> SinusoidBatch:
        """Task ``index`` (kept as a batch of one) or a slice of tasks."""
        if isinstance(index, int):
            if not -self.num_tasks <= index < self.num_tasks:
                raise IndexError(f"task {index} is out of range for {self.num_tasks} tasks")
            index = slice(index, index + 1 if index != -1 else None)
        return SinusoidBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def _range(name: str, value: Sequence[float], minimum: float | None = None) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ConfigError(f"{name} must be a finite pair with low <= high, got {value!r}")
    if minimum is not None and low < minimum:
        raise ConfigError(f"{name} must lie in [{minimum}, inf), got {value!r}")
    return low, high


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class SinusoidTasks:
    """The sinusoid regression task family of Finn et al. (2017), as a task sampler.

    Targets follow ``y = amplitude * sin(x - phase)`` (the MAML code's convention).

    Args:
        amplitude: range ``(low, high)`` of the uniform amplitude distribution (``low >= 0``).
        phase: range of the uniform phase distribution, in radians.
        x_range: range of the uniform input distribution.
        noise_std: standard deviation of Gaussian noise added to every target (``>= 0``;
            the paper uses none).
        seed: seeds the sampler's own ``torch.Generator`` (``>= 0``); :meth:`sample` draws from it
            and ignores the global RNG, :meth:`task` does not touch it.

    Example::

        tasks = SinusoidTasks(seed=0)
        batch = tasks.sample(batch_size=25, shots=10, queries=10)   # training
        fixed = tasks.tasks(range(600), shots=10, queries=100)       # the same every time
    """

    def __init__(
        self,
        amplitude: Sequence[float] = (0.1, 5.0),
        phase: Sequence[float] = (0.0, math.pi),
        x_range: Sequence[float] = (-5.0, 5.0),
        noise_std: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.amplitude = _range("amplitude", amplitude, minimum=0.0)
        self.phase = _range("phase", phase)
        self.x_range = _range("x_range", x_range)
        if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float, np.floating)):
            raise ConfigError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
        if not math.isfinite(noise_std) or noise_std < 0:
            raise ConfigError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
        self.noise_std = float(noise_std)
        self.seed = _count("seed", seed, 0)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __repr__(self) -> str:
        return (
            f"SinusoidTasks(amplitude={self.amplitude}, phase={self.phase}, "
            f"x_range={self.x_range}, noise_std={self.noise_std}, seed={self.seed})"
        )

    @staticmethod
    def function(x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """``amplitude * sin(x - phase)``, broadcasting ``amplitude`` / ``phase`` ``[B]`` over
        ``x`` ``[B, ...]``."""
        shape = (-1,) + (1,) * (x.dim() - 1)
        return amplitude.reshape(shape) * torch.sin(x - phase.reshape(shape))

    @staticmethod
    def _uniform(
        bounds: tuple[float, float], shape: tuple[int, ...], generator: torch.Generator
    ) -> torch.Tensor:
        low, high = bounds
        return low + (high - low) * torch.rand(shape, generator=generator)

    def _build(
        self,
        amplitude: torch.Tensor,
        phase: torch.Tensor,
        support_u: torch.Tensor,
        query_u: torch.Tensor,
        support_n: torch.Tensor,
        query_n: torch.Tensor,
    ) -> SinusoidBatch:
        low, high = self.x_range
        support_x = (low + (high - low) * support_u).unsqueeze(-1)
        query_x = (low + (high - low) * query_u).unsqueeze(-1)
        support_y = self.function(support_x, amplitude, phase)
        query_y = self.function(query_x, amplitude, phase)
        if self.noise_std > 0:
            support_y = support_y + self.noise_std * support_n.unsqueeze(-1)
            query_y = query_y + self.noise_std * query_n.unsqueeze(-1)
        return SinusoidBatch(support_x, support_y, query_x, query_y, amplitude, phase)

    def sample(self, batch_size: int, shots: int, queries: int) -> SinusoidBatch:
        """``batch_size`` fresh random tasks from the sampler's own generator.

        Args:
            batch_size: number of tasks ``B`` (``>= 1``).
            shots: support points per task ``K`` (``>= 1``).
            queries: query points per task ``Q`` (``>= 1``).
        """
        batch_size = _count("batch_size", batch_size, 1)
        shots = _count("shots", shots, 1)
        queries = _count("queries", queries, 1)
        g = self.generator
        amplitude = self._uniform(self.amplitude, (batch_size,), g)
        phase = self._uniform(self.phase, (batch_size,), g)
        support_u = torch.rand(batch_size, shots, generator=g)
        query_u = torch.rand(batch_size, queries, generator=g)
        if self.noise_std > 0:
            support_n = torch.randn(batch_size, shots, generator=g)
            query_n = torch.randn(batch_size, queries, generator=g)
        else:
            support_n = query_n = torch.empty(0)
        return self._build(amplitude, phase, support_u, query_u, support_n, query_n)

    def _stream(self, index: int, stream: int, count: int, normal: bool = False) -> torch.Tensor:
        """``count`` draws of the fixed stream ``(seed, index, stream)``; numpy's generator fills
        arrays in order, so the first ``k`` draws never depend on ``count``."""
        rng = np.random.default_rng([self.seed, index, stream])
        values = rng.standard_normal(count) if normal else rng.random(count)
        return torch.from_numpy(values).float()

    def task(self, index: int, shots: int, queries: int) -> SinusoidBatch:
        """The fixed task number ``index`` (a batch of one), the same on every call.

        It depends only on ``(seed, index)`` and the ranges: its amplitude and phase do not
        depend on ``shots`` or ``queries``, its support points not on ``queries`` (and vice
        versa), and raising ``shots`` or ``queries`` only appends points.  Use it for evaluation
        sets that must not change between runs (e.g. ``tasks(range(600), ...)``).
        """
        return self.tasks([index], shots, queries)

    def tasks(self, indices: Sequence[int] | range, shots: int, queries: int) -> SinusoidBatch:
        """The fixed tasks ``indices`` stacked into one batch (task ``b`` equals
        ``task(indices[b], shots, queries)``)."""
        shots = _count("shots", shots, 1)
        queries = _count("queries", queries, 1)
        indices = [_count("index", i, 0) for i in indices]
        if not indices:
            raise ConfigError("indices must name at least one task, got an empty sequence")
        noisy = self.noise_std > 0
        empty = torch.empty(0)
        u = torch.stack([self._stream(i, 0, 2) for i in indices])
        (a_lo, a_hi), (p_lo, p_hi) = self.amplitude, self.phase
        return self._build(
            a_lo + (a_hi - a_lo) * u[:, 0],
            p_lo + (p_hi - p_lo) * u[:, 1],
            torch.stack([self._stream(i, 1, shots) for i in indices]),
            torch.stack([self._stream(i, 2, queries) for i in indices]),
            torch.stack([self._stream(i, 3, shots, True) for i in indices]) if noisy else empty,
            torch.stack([self._stream(i, 4, queries, True) for i in indices]) if noisy else empty,
        )
