"""2-D views of source and target features: a PCA projection and a before/after plot.

A domain shift shows as two separate clouds; adaptation that aligns the feature distributions
(Ganin and Lempitsky 2015; Tzeng et al. 2017) makes them overlap. PCA is linear and fitted on both
domains together, so the picture shows the directions of largest variance of the union; it is a
view, not a measurement (the proxy A-distance is the measurement).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mtl.errors import ConfigError

__all__ = ["pca_2d", "plot_domain_features"]


def pca_2d(*features: torch.Tensor) -> list[torch.Tensor]:
    """Project each ``[N_i, D]`` set onto the top two principal axes of all sets together.

    Returns one ``[N_i, 2]`` tensor per input (a zero second column if ``D == 1``).
    """
    if not features:
        raise ConfigError("pca_2d needs at least one feature set")
    mats = []
    for i, f in enumerate(features):
        if not isinstance(f, torch.Tensor) or f.dim() != 2 or len(f) == 0:
            raise ConfigError(f"feature set {i} must be a non-empty [N, D] tensor, got "
                              f"{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}")
        mats.append(f.detach().float().cpu())
    if len({m.shape[1] for m in mats}) != 1:
        raise ConfigError(f"feature sets must have the same width, got {[m.shape[1] for m in mats]}")
    joint = torch.cat(mats)
    mean = joint.mean(0)
    _, _, vh = torch.linalg.svd(joint - mean, full_matrices=False)
    axes = vh[:2].T
    if axes.shape[1] < 2:
        axes = torch.cat([axes, torch.zeros(axes.shape[0], 2 - axes.shape[1])], 1)
    return [(m - mean) @ axes for m in mats]


def plot_domain_features(
    path: str | os.PathLike,
    panels: Sequence[tuple[str, torch.Tensor, torch.Tensor]],
    *,
    max_points: int = 500,
    seed: int = 0,
    title: str = "",
) -> Path:
    """Save a row of scatter plots, one per ``(title, source_features, target_features)`` panel.

    Each panel is its own :func:`pca_2d` of both domains; at most ``max_points`` random points
    per domain are drawn (chosen by ``seed``). Written atomically as a PNG; returns the path.
    """
    if not panels:
        raise ConfigError("plot_domain_features needs at least one panel")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    gen = torch.Generator().manual_seed(seed)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
    for ax, (name, fs, ft) in zip(axes[0], panels):
        ps, pt = pca_2d(fs, ft)
        ps = ps[torch.randperm(len(ps), generator=gen)[:max_points]]
        pt = pt[torch.randperm(len(pt), generator=gen)[:max_points]]
        ax.scatter(ps[:, 0], ps[:, 1], s=5, alpha=0.5, label="source", color="C0")
        ax.scatter(pt[:, 0], pt[:, 1], s=5, alpha=0.5, label="target", color="C1")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="best", fontsize=8, markerscale=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, out)
    return out
