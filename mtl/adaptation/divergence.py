"""Proxy A-distance: a measured H-divergence between two domains (Ben-David et al. 2007, 2010).

A domain classifier is trained to tell source features from target features; its error
``err`` on held-out features gives ``d_A = 2 (1 - 2 err)``. Two samples of one domain give
``err`` near 0.5 and ``d_A`` near 0; trivially separable domains give ``err`` near 0 and
``d_A`` near 2. The classifier here is a linear one (logistic regression on standardised
features), as in Ganin et al. 2016; ``hidden`` adds one hidden layer for a richer H.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from mtl.errors import ConfigError

__all__ = ["ProxyADistance", "proxy_a_distance"]


@dataclass(frozen=True)
class ProxyADistance:
    """Result of :func:`proxy_a_distance`.

    ``distance`` is ``2 (1 - 2 error)`` clipped to ``[0, 2]``; ``error`` is the balanced
    held-out error of the domain classifier (the mean of its error on each domain).
    """

    distance: float
    error: float
    n_source: int
    n_target: int

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a plain dict (for JSON)."""
        return asdict(self)


def _as_matrix(name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] < 4:
        raise ConfigError(f"{name} must hold at least 4 samples as an (N, ...) tensor, got shape {tuple(x.shape)}")
    x = x.detach().reshape(x.shape[0], -1).float().cpu()
    if not torch.isfinite(x).all():
        raise ConfigError(f"{name} contains NaN or infinite values")
    return x


def proxy_a_distance(
    source: torch.Tensor,
    target: torch.Tensor,
    *,
    test_fraction: float = 0.5,
    hidden: int = 0,
    epochs: int = 200,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> ProxyADistance:
    """Proxy A-distance between ``source`` and ``target`` samples (features or flattened inputs).

    Each domain is split at random into a training and a held-out part (``test_fraction``
    held out); a domain classifier is fitted full-batch with Adam for ``epochs`` steps on the
    standardised training features, and its balanced error on the held-out part gives
    ``d_A = 2 (1 - 2 err)``. Deterministic for a given ``seed``.
    """
    xs, xt = _as_matrix("source", source), _as_matrix("target", target)
    if xs.shape[1] != xt.shape[1]:
        raise ConfigError(f"source and target must have the same feature size, got {xs.shape[1]} and {xt.shape[1]}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if hidden < 0 or epochs < 1:
        raise ConfigError(f"hidden must be >= 0 and epochs >= 1, got hidden={hidden!r}, epochs={epochs!r}")

    gen = torch.Generator().manual_seed(seed)

    def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.randperm(x.shape[0], generator=gen)
        n_test = min(max(1, round(x.shape[0] * test_fraction)), x.shape[0] - 1)
        return x[order[n_test:]], x[order[:n_test]]

    s_train, s_test = split(xs)
    t_train, t_test = split(xt)
    x_train = torch.cat([s_train, t_train])
    y_train = torch.cat([torch.zeros(len(s_train)), torch.ones(len(t_train))])
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)

    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    dim = x_train.shape[1]
    model: nn.Module = (
        nn.Linear(dim, 1) if hidden == 0 else nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    )
    torch.random.set_rng_state(torch_state)
    # Weight each domain equally so that unequal sample sizes do not bias the classifier.
    weights = torch.where(y_train == 0, 0.5 / len(s_train), 0.5 / len(t_train))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    z_train = (x_train - mean) / std
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            logits = model(z_train).squeeze(1)
            loss = (nn.functional.binary_cross_entropy_with_logits(logits, y_train, reduction="none") * weights).sum()
            loss.backward()
            opt.step()
    with torch.no_grad():
        err_s = (model((s_test - mean) / std).squeeze(1) > 0).float().mean().item()
        err_t = (model((t_test - mean) / std).squeeze(1) <= 0).float().mean().item()
    error = 0.5 * (err_s + err_t)
    distance = min(2.0, max(0.0, 2.0 * (1.0 - 2.0 * error)))
    return ProxyADistance(distance=distance, error=error, n_source=xs.shape[0], n_target=xt.shape[0])
