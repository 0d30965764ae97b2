"""Heatmaps of task-affinity matrices (TAG, Fifty et al. 2021; transfer gains, Zamir et al. 2018)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from mtl.errors import ConfigError

__all__ = ["plot_affinity"]


def plot_affinity(path: str | os.PathLike, matrix: Sequence[Sequence[float]], names: Sequence[str],
                  title: str = "", row_label: str = "source task i", col_label: str = "target task j",
                  annotate: bool = True, value_label: str = "affinity") -> Path:
    """Save a heatmap of ``matrix`` (rows: sources, columns: targets) as a PNG, atomically.

    The colour scale is symmetric around 0 (red: positive, blue: negative, white: 0 or NaN);
    ``annotate`` writes each value in its cell.
    """
    n = len(names)
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise ConfigError(f"the matrix must be {n} x {n} for tasks {list(names)}")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.array([[float(v) if v is not None else math.nan for v in row] for row in matrix], dtype=float)
    finite = data[np.isfinite(data)]
    limit = float(np.abs(finite).max()) if finite.size else 1.0
    limit = limit or 1.0
    side = 1.2 + 0.75 * n
    fig, ax = plt.subplots(figsize=(side + 1.4, side))
    image = ax.imshow(np.ma.masked_invalid(data), cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_xticks(range(n), labels=list(names), rotation=35, ha="right")
    ax.set_yticks(range(n), labels=list(names))
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    if annotate:
        for i in range(n):
            for j in range(n):
                v = data[i, j]
                text = "n/a" if not math.isfinite(v) else f"{v:.2g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if math.isfinite(v) and abs(v) > 0.6 * limit else "black")
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label(value_label)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
