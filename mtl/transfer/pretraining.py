"""Greedy layer-wise unsupervised pre-training (Hinton, Osindero and Teh 2006; Bengio et al. 2007).

Each trunk layer is trained in turn, from the input upward, to model the output of the layers
below it, which stay fixed (their outputs are computed once per layer, like bottleneck features).
Two layer models are offered:

- ``"autoencoder"`` (Bengio et al. 2007; denoising with masking noise, Vincent et al. 2008): the
  layer is the encoder of a one-layer auto-encoder whose throw-away decoder reconstructs the
  layer's input (a 3x3 convolution after upsampling for convolutional blocks, a linear map
  otherwise; Masci et al. 2011 for the convolutional case);
- ``"rbm"`` (Hinton et al. 2006): for the linear layers of an ``mlp``, a Bernoulli restricted
  Boltzmann machine trained with contrastive divergence CD-k (Hinton 2002), whose weights and
  hidden biases become the layer's; the next RBM is trained on the hidden probabilities.

Supervised fine-tuning of the whole network follows (:func:`mtl.transfer.fine_tune` with the
``"full"`` strategy, or :func:`mtl.training.train_classifier`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mtl.errors import ConfigError

__all__ = ["METHODS", "LayerReport", "PretrainConfig", "greedy_pretrain", "layer_units"]

METHODS = ("autoencoder", "rbm")


@dataclass
class PretrainConfig:
    """Options of :func:`greedy_pretrain`.

    ``epochs`` passes per layer; ``noise`` the masking-noise probability of a denoising
    auto-encoder (0: plain); ``lr`` Adam's rate for auto-encoders, ``rbm_lr`` and ``cd_steps`` the
    RBM's learning rate and Gibbs steps.
    """

    method: str = "autoencoder"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    noise: float = 0.0
    rbm_lr: float = 0.05
    cd_steps: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("epochs", "batch_size", "cd_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.noise < 1:
            raise ConfigError(f"noise must be in [0, 1), got {self.noise!r}")
        if not (self.lr > 0 and self.rbm_lr > 0):
            raise ConfigError(f"lr and rbm_lr must be > 0, got {self.lr!r} and {self.rbm_lr!r}")


@dataclass
class LayerReport:
    """Reconstruction error of one layer at its first and last epoch."""

    layer: str
    method: str
    first_loss: float
    final_loss: float
    seconds: float

    def as_dict(self) -> dict[str, float | str]:
        """Plain values for JSON."""
        return asdict(self)


def layer_units(model: nn.Module) -> list[tuple[str, nn.Sequential]]:
    """The trunk cut into units, one per child with parameters plus the parameter-free children after it.

    For ``conv4``: ``block1``..``block4`` (the last with the final flatten); for ``mlp``:
    ``[flatten, fc1, act1]``, ``[fc2, act2]``, ...
    """
    trunk = getattr(model, "features", None)
    if not isinstance(trunk, nn.Sequential):
        raise ConfigError(f"layer-wise pre-training needs a Sequential .features trunk, got {type(model).__name__}")
    units: list[tuple[str, list[nn.Module]]] = []
    pending: list[nn.Module] = []
    for name, child in trunk.named_children():
        if any(True for _ in child.parameters()):
            units.append((name, pending + [child]))
            pending = []
        elif units:
            units[-1][1].append(child)
        else:
            pending.append(child)
    if not units:
        raise ConfigError("the trunk has no layer with parameters to pre-train")
    return [(name, nn.Sequential(*mods)) for name, mods in units]


@torch.no_grad()
def _outputs(unit: nn.Module, x: torch.Tensor, batch_size: int, fn: object = None) -> torch.Tensor:
    was = unit.training
    unit.eval()
    out = torch.cat([(fn or unit)(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])  # type: ignore[operator]
    unit.train(was)
    return out


def _decoder(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> nn.Module:
    if len(in_shape) == 3 and len(out_shape) == 3:
        return nn.Sequential(nn.Upsample(size=in_shape[1:], mode="nearest"), nn.Conv2d(out_shape[0], in_shape[0], 3,
                                                                                       padding=1))
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(out_shape), math.prod(in_shape)),
                         nn.Unflatten(1, in_shape))


def _train_autoencoder(name: str, unit: nn.Module, x: torch.Tensor, cfg: PretrainConfig, gen: torch.Generator,
                       progress: bool) -> LayerReport:
    unit.train()
    with torch.no_grad():
        out_shape = tuple(unit(x[:2]).shape[1:])
    decoder = _decoder(tuple(x.shape[1:]), out_shape)
    opt = torch.optim.Adam(list(unit.parameters()) + list(decoder.parameters()), lr=cfg.lr)
    losses, start = [], time.perf_counter()
    for _ in tqdm(range(cfg.epochs), desc=f"pretrain {name}", disable=not progress, leave=False):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), cfg.batch_size):
            batch = x[order[i:i + cfg.batch_size]]
            noisy = batch * (torch.rand(batch.shape, generator=gen) >= cfg.noise) if cfg.noise else batch
            loss = F.mse_loss(decoder(unit(noisy)), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(x))
    return LayerReport(name, "autoencoder", losses[0], losses[-1], time.perf_counter() - start)


def _linear_of(name: str, unit: nn.Sequential) -> nn.Linear:
    linears = [m for m in unit.modules() if isinstance(m, nn.Linear)]
    others = [m for m in unit.modules() if any(True for _ in m.parameters(recurse=False)) and not isinstance(m,
                                                                                                       nn.Linear)]
    if len(linears) != 1 or others:
        raise ConfigError(f"method 'rbm' needs linear layers (an mlp backbone); layer {name!r} is {unit}")
    return linears[0]


def _train_rbm(name: str, unit: nn.Sequential, v_data: torch.Tensor, cfg: PretrainConfig, gen: torch.Generator,
               progress: bool) -> tuple[LayerReport, torch.Tensor]:
    """Bernoulli RBM by CD-k (Hinton 2002) on ``v_data`` in [0, 1]; returns the report and hidden probabilities."""
    lin = _linear_of(name, unit)
    v_data = v_data.reshape(len(v_data), -1)
    if v_data.shape[1] != lin.in_features:
        raise ConfigError(f"layer {name!r} takes {lin.in_features} inputs, got {v_data.shape[1]}")
    if v_data.min() < 0 or v_data.max() > 1:
        raise ConfigError(f"method 'rbm' needs inputs in [0, 1] for layer {name!r} (Bernoulli visible units), got "
                          f"[{float(v_data.min()):.3g}, {float(v_data.max()):.3g}]")
    with torch.no_grad():
        w = lin.weight.normal_(0.0, 0.01, generator=gen)
        b_h = lin.bias.zero_()
        b_v = torch.zeros(lin.in_features)
        losses, start = [], time.perf_counter()
        for _ in tqdm(range(cfg.epochs), desc=f"rbm {name}", disable=not progress, leave=False):
            order = torch.randperm(len(v_data), generator=gen)
            total = 0.0
            for i in range(0, len(v_data), cfg.batch_size):
                v0 = v_data[order[i:i + cfg.batch_size]]
                ph0 = torch.sigmoid(v0 @ w.t() + b_h)
                h, vk, phk = torch.bernoulli(ph0, generator=gen), v0, ph0
                for _ in range(cfg.cd_steps):
                    vk = torch.sigmoid(h @ w + b_v)
                    phk = torch.sigmoid(vk @ w.t() + b_h)
                    h = torch.bernoulli(phk, generator=gen)
                n = len(v0)
                w += cfg.rbm_lr * (ph0.t() @ v0 - phk.t() @ vk) / n
                b_h += cfg.rbm_lr * (ph0 - phk).mean(0)
                b_v += cfg.rbm_lr * (v0 - vk).mean(0)
                recon = torch.sigmoid(torch.sigmoid(v0 @ w.t() + b_h) @ w + b_v)
                total += float(F.mse_loss(recon, v0)) * n
            losses.append(total / len(v_data))
        hidden = torch.sigmoid(v_data @ w.t() + b_h)
    return LayerReport(name, "rbm", losses[0], losses[-1], time.perf_counter() - start), hidden


def greedy_pretrain(model: nn.Module, images: torch.Tensor, config: PretrainConfig | None = None, *,
                    progress: bool = False) -> list[LayerReport]:
    """Pre-train ``model``'s trunk layer by layer on unlabelled ``images`` (in place); returns one report per layer.

    Each layer is trained on the outputs of the already pre-trained layers below it, computed once
    (eval mode, no gradients). The head is left alone.
    """
    cfg = config or PretrainConfig()
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or len(images) < 2:
        raise ConfigError(f"images must be a tensor [N, ...] with N >= 2, got "
                          f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    units = layer_units(model)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    x = images.float()
    reports = []
    for name, unit in units:
        if cfg.method == "rbm":
            report, x = _train_rbm(name, unit, x, cfg, gen, progress)
        else:
            report = _train_autoencoder(name, unit, x, cfg, gen, progress)
            x = _outputs(unit, x, 512)
        reports.append(report)
    return reports
