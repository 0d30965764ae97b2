"""Synthetic regression tasks with a known matrix of pairwise task correlations.

A generalisation of the two-task construction of Ma et al. (2018), section 3.2 (see
:func:`mtl.multitask.data.mmoe_synthetic`) to ``T`` tasks: the cosine similarity of the task
weight vectors ``w_s, w_t`` is an entry ``P[s, t]`` of a user-given correlation matrix, so the
ground-truth relations between tasks are known and task-affinity methods can be checked against
them (Standley et al. 2020 and Fifty et al. 2021 evaluate groupings on tasks whose relations are
only guessed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mtl.errors import ConfigError
from mtl.multitask.data import (
    MultiTaskProblem,
    check_sine_regression_args,
    sine_regression_labels,
    split_regression_problem,
)
from mtl.multitask.tasks import MultiTaskData, TaskSpec

__all__ = ["PAIRS_CORRELATIONS", "correlated_regression", "pairs_correlations"]


def pairs_correlations(first: float = 0.9, second: float = 0.7, across: float = 0.0) -> list[list[float]]:
    """The 4 x 4 correlation matrix of two correlated pairs: ``(t1, t2)`` at ``first``, ``(t3, t4)`` at ``second``.

    Every pair across the two groups has correlation ``across``.
    """
    return [[1.0, first, across, across],
            [first, 1.0, across, across],
            [across, across, 1.0, second],
            [across, across, second, 1.0]]


PAIRS_CORRELATIONS: list[list[float]] = pairs_correlations()
"""Default of :func:`correlated_regression`: tasks ``t1, t2`` correlated at 0.9, ``t3, t4`` at 0.7, others 0."""


def _check_correlations(correlations: Sequence[Sequence[float]]) -> np.ndarray:
    try:
        p = np.asarray(correlations, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"correlations must be a square matrix of numbers, got {correlations!r}") from None
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 2:
        raise ConfigError(f"correlations must be a square matrix of at least 2 x 2, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ConfigError("correlations must be finite numbers")
    if not np.allclose(p, p.T):
        raise ConfigError("correlations must be symmetric (P[s][t] == P[t][s])")
    if not np.allclose(np.diag(p), 1.0):
        raise ConfigError(f"correlations must have ones on the diagonal, got {np.diag(p).tolist()}")
    if np.abs(p).max() > 1.0 + 1e-12:
        raise ConfigError("correlations must lie in [-1, 1]")
    eig = np.linalg.eigvalsh(p)
    if eig.min() < -1e-9:
        raise ConfigError(f"correlations must be positive semi-definite (smallest eigenvalue {eig.min():.3g}); "
                          "such task weight vectors do not exist")
    return p


def correlated_regression(
    correlations: Sequence[Sequence[float]] | None = None,
    task_names: Sequence[str] | None = None,
    num_train: int = 4000,
    num_val: int = 1000,
    num_test: int = 2000,
    input_dim: int = 100,
    num_sines: int = 10,
    scale: float = 1.0,
    noise_std: float = 0.1,
    seed: int = 0,
) -> MultiTaskProblem:
    """``T`` regression tasks whose weight vectors have the cosine similarities ``correlations``.

    With ``P = L L^T`` (``L``: a Cholesky-like factor from the eigen-decomposition, so a
    semi-definite ``P`` works too) and ``T`` orthonormal vectors ``u_1..u_T`` in ``R^d``, task ``t``
    has the weights ``w_t = c sum_k L[t, k] u_k``, hence ``w_s . w_t = c^2 P[s, t]``. As in Ma et
    al. (2018), inputs are ``x ~ N(0, I_d)`` and labels

        ``y_t = w_t^T x + sum_{i=1..m} sin(alpha_i w_t^T x + beta_i) + eps_t``,  ``eps_t ~ N(0, noise_std^2)``

    with ``alpha_i, beta_i ~ N(0, 1)`` shared by all tasks. For two tasks and
    ``P = [[1, p], [p, 1]]`` this is the construction of
    :func:`~mtl.multitask.data.mmoe_synthetic`. ``info`` holds ``P`` and the measured Pearson
    correlations of the labels (lower than ``P`` because of the sine terms).

    Args:
        correlations: the ``T x T`` matrix ``P`` (symmetric, unit diagonal, positive
            semi-definite); default :data:`PAIRS_CORRELATIONS` (4 tasks, two correlated pairs).
        task_names: one name per task (default ``t1 .. tT``).
        num_train: training samples.
        num_val: validation samples.
        num_test: test samples.
        input_dim: ``d >= T``.
        num_sines: ``m``.
        scale: ``c``.
        noise_std: standard deviation of the label noise.
        seed: fixes the weights, ``alpha``, ``beta`` and the samples.
    """
    p = _check_correlations(PAIRS_CORRELATIONS if correlations is None else correlations)
    n_tasks = p.shape[0]
    names = [f"t{i + 1}" for i in range(n_tasks)] if task_names is None else [str(n) for n in task_names]
    if len(names) != n_tasks:
        raise ConfigError(f"task_names has {len(names)} names but correlations describe {n_tasks} tasks")
    check_sine_regression_args(num_train, num_val, num_test, input_dim, n_tasks, num_sines, scale, noise_std, seed)
    tasks = [TaskSpec(n, 1, "regression") for n in names]  # validates the names
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((input_dim, n_tasks)))
    eigval, eigvec = np.linalg.eigh(p)
    factor = eigvec * np.sqrt(np.clip(eigval, 0.0, None))  # P = factor @ factor.T
    weights = scale * basis @ factor.T  # column t is w_t
    alpha = rng.standard_normal(num_sines)
    beta = rng.standard_normal(num_sines)
    total = num_train + num_val + num_test
    x = rng.standard_normal((total, input_dim))
    z = x @ weights
    labels = np.stack([sine_regression_labels(z[:, t], alpha, beta, noise_std, rng) for t in range(n_tasks)], 1)
    targets = {n: torch.from_numpy(labels[:, t]).float()[:, None] for t, n in enumerate(names)}
    return split_regression_problem(
        f"correlated-regression(T={n_tasks})", tasks, MultiTaskData(torch.from_numpy(x).float(), targets),
        num_train, num_val,
        {"correlations": p.tolist(), "label_pearson": np.corrcoef(labels.T).round(4).tolist(),
         "input_dim": input_dim, "num_sines": num_sines, "seed": seed},
    )
