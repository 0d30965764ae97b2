"""Small statistics shared by the benchmark scripts (they import it from their own folder)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["mean_std", "mean_std_present"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def mean_std_present(values: Sequence[float | None]) -> tuple[float, float]:
    """:func:`mean_std` of the values that are neither None nor NaN; ``(nan, nan)`` when none is."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return mean_std(present) if present else (math.nan, math.nan)
