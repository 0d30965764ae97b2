"""A CSV metrics log that survives crashes and new columns, and learning-curve plots."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mtl.utils.checkpoint import atomic_write_text


class CSVLogger:
    """Append rows of metrics to a CSV file; columns are the union of keys seen so far.

    The whole file is rewritten atomically on each :meth:`log` (run logs are small), so a
    killed run leaves a complete, parseable file. Existing rows are read back on creation,
    so a resumed run continues the same log; ``truncate_after`` drops rows past a resumed step.
    """

    def __init__(self, path: str | os.PathLike, step_key: str = "iteration") -> None:
        self.path = Path(path)
        self.step_key = step_key
        self.rows: list[dict[str, object]] = []
        self.columns: list[str] = []
        if self.path.is_file():
            with self.path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                self.columns = list(reader.fieldnames or [])
                self.rows = [dict(r) for r in reader]

    def truncate_after(self, step: int) -> None:
        """Forget rows whose step is greater than ``step`` (used when resuming)."""
        self.rows = [r for r in self.rows if float(r.get(self.step_key, 0) or 0) <= step]
        self._write()

    def log(self, row: Mapping[str, object]) -> None:
        """Add one row and rewrite the file."""
        for key in row:
            if key not in self.columns:
                self.columns.append(key)
        self.rows.append(dict(row))
        self._write()

    def _write(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())

    def column(self, key: str) -> list[float]:
        """The numeric values logged under ``key`` (missing entries as NaN)."""
        out = []
        for r in self.rows:
            try:
                out.append(float(r.get(key, "nan") or "nan"))
            except (TypeError, ValueError):
                out.append(math.nan)
        return out


def plot_curves(
    path: str | os.PathLike,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    title: str = "",
    xlabel: str = "iteration",
    panels: Sequence[Sequence[str]] | None = None,
) -> Path:
    """Save line plots of ``series`` against ``x`` to a PNG; ``panels`` groups series per subplot."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = [list(p) for p in panels] if panels else [[k] for k in series]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), squeeze=False)
    for ax, keys in zip(axes[0], groups):
        for key in keys:
            ys = list(series[key])
            xs = list(x)[: len(ys)]
            pts = [(a, b) for a, b in zip(xs, ys) if not math.isnan(b)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None,
                        label=key)
        ax.set_xlabel(xlabel)
        ax.set_title(", ".join(keys))
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
