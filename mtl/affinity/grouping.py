"""Task grouping from an affinity matrix: the split into ``k`` groups with the highest total affinity.

Following the network-selection step of Fifty et al. (2021), a task ``j`` in group ``G`` is
credited with the mean affinity it receives from the other members of its group,

    ``score(j, G) = mean_{i in G, i != j} A[i][j]``  (0 for a task alone in its group),

and a split (a partition of the tasks into exactly ``k`` non-empty groups) scores
``sum_G sum_{j in G} score(j, G)``. All partitions are enumerated (their number is the Stirling
number ``S(T, k)``; at most :data:`MAX_TASKS` tasks), so the best split is exact. Fifty et al.
also allow a task to appear in several groups and be served by the best one; this module keeps to
disjoint groups, which is what "train each group as one network" needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from mtl.errors import ConfigError

__all__ = ["MAX_TASKS", "Grouping", "best_grouping", "group_score", "partitions", "rank_groupings"]

MAX_TASKS = 10
"""Largest number of tasks :func:`best_grouping` enumerates (``S(10, 5) = 42,525`` splits)."""


@dataclass(frozen=True)
class Grouping:
    """A split of the tasks into groups and its total affinity (see the module docstring)."""

    groups: tuple[tuple[str, ...], ...]
    score: float

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {"groups": [list(g) for g in self.groups], "score": self.score}


def partitions(items: Sequence[str], k: int) -> Iterator[list[list[str]]]:
    """Every partition of ``items`` into exactly ``k`` non-empty groups, each once (groups in order of first item)."""
    items = list(items)
    n = len(items)

    def rec(i: int, groups: list[list[str]]) -> Iterator[list[list[str]]]:
        if n - i < k - len(groups):
            return
        if i == n:
            if len(groups) == k:
                yield [list(g) for g in groups]
            return
        for g in groups:
            g.append(items[i])
            yield from rec(i + 1, groups)
            g.pop()
        if len(groups) < k:
            groups.append([items[i]])
            yield from rec(i + 1, groups)
            groups.pop()

    if k < 1 or k > n:
        return iter(())
    return rec(0, [])


def _check(matrix: Sequence[Sequence[float]], names: Sequence[str]) -> None:
    n = len(names)
    if n < 1 or len(set(names)) != n:
        raise ConfigError(f"task names must be non-empty and unique, got {list(names)}")
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise ConfigError(f"the affinity matrix must be {n} x {n} for tasks {list(names)}")


def group_score(matrix: Sequence[Sequence[float]], names: Sequence[str], groups: Sequence[Sequence[str]]) -> float:
    """Total affinity of a split: ``sum_G sum_{j in G} mean_{i in G, i != j} A[i][j]`` (NaN entries are skipped).

    ``matrix[i][j]`` is the affinity of task ``names[i]`` onto task ``names[j]``.
    """
    _check(matrix, names)
    index = {n: i for i, n in enumerate(names)}
    flat = [t for g in groups for t in g]
    if sorted(flat) != sorted(names):
        raise ConfigError(f"groups {[list(g) for g in groups]} must use every task of {list(names)} exactly once")
    total = 0.0
    for group in groups:
        for j in group:
            vals = [float(matrix[index[i]][index[j]]) for i in group if i != j]
            vals = [v for v in vals if math.isfinite(v)]
            if vals:
                total += sum(vals) / len(vals)
    return total


def rank_groupings(matrix: Sequence[Sequence[float]], names: Sequence[str], k: int) -> list[Grouping]:
    """All splits into ``k`` groups, best first (ties keep enumeration order)."""
    _check(matrix, names)
    n = len(names)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ConfigError(f"number of groups must be an integer in 1..{n} (the number of tasks), got {k!r}")
    if n > MAX_TASKS:
        raise ConfigError(f"exhaustive grouping handles at most {MAX_TASKS} tasks, got {n}")
    ranked = [Grouping(tuple(tuple(g) for g in p), group_score(matrix, names, p)) for p in partitions(names, k)]
    return sorted(ranked, key=lambda g: -g.score)


def best_grouping(matrix: Sequence[Sequence[float]], names: Sequence[str], k: int) -> Grouping:
    """The split of the tasks into ``k`` groups with the highest total affinity (Fifty et al. 2021, disjoint groups)."""
    return rank_groupings(matrix, names, k)[0]
