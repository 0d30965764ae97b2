"""What every adaptation method shares: input checks, model building, batching, results.

The setting is unsupervised domain adaptation (Ben-David et al. 2010; Ganin and Lempitsky 2015;
Tzeng et al. 2017): labelled *source* images and unlabelled *target* images of the same classes,
with the same input shape; the goal is accuracy on the target domain.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtl.backbones import create_backbone
from mtl.backbones.base import Backbone
from mtl.data.base import LabelledImages
from mtl.errors import ConfigError
from mtl.training import OPTIMIZERS, predict_logits
from mtl.utils.precision import check_precision

__all__ = [
    "AdaptConfig",
    "AdaptationResult",
    "build_classifier",
    "check_domains",
    "domain_discriminator",
    "extract_features",
    "random_translate",
    "target_images",
]


@dataclass
class AdaptConfig:
    """Training settings shared by the adaptation methods (steps, not epochs, so methods compare).

    ``steps`` optimizer steps of ``batch_size`` source images (plus ``batch_size`` target images
    for the adversarial methods); ``log_every`` steps a row is added to the history;
    ``translate`` moves every training image by a random offset of up to that many pixels
    (edge pixels repeated), the usual augmentation for few drawings per class. ``precision="bf16"``
    runs the networks' forward passes under bfloat16 autocast (:mod:`mtl.utils.precision`), the
    losses and the evaluation in float32.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    log_every: int = 50
    translate: int = 0
    seed: int = 0
    progress: bool = True
    precision: str = "fp32"

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        for name in ("steps", "batch_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.translate, bool) or not isinstance(self.translate, int) or self.translate < 0:
            raise ConfigError(f"translate must be an integer >= 0 (pixels), got {self.translate!r}")
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and math.isfinite(lr)):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        check_precision(self.precision)


@dataclass
class AdaptationResult:
    """A trained adaptation run.

    ``model`` classifies target images; ``source_model`` is the network that maps *source*
    images to features (the same as ``model`` except for ADDA, whose target encoder is a separate
    copy of the source encoder). ``history`` holds one dict per logged step.
    """

    method: str
    model: Backbone
    source_model: Backbone
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the networks)."""
        return {"method": self.method, "steps": self.steps, "seconds": self.seconds, "history": self.history,
                **self.extras}


def target_images(target: object, name: str = "target") -> torch.Tensor:
    """The image tensor ``[N, C, H, W]`` of a target set: a tensor, a ``LabelledImages`` (labels
    ignored) or anything with an ``images`` tensor (e.g. ``UnlabelledImages``); it must not be empty."""
    images = getattr(target, "images", target)
    if not isinstance(images, torch.Tensor):
        raise ConfigError(f"{name} must be an image tensor or a dataset with .images, got {type(target).__name__}")
    if images.dim() != 4:
        raise ConfigError(f"{name} images must have shape [N, C, H, W], got {tuple(images.shape)}")
    if len(images) == 0:
        raise ConfigError(f"the {name} set is empty: unsupervised adaptation needs target images")
    if not images.is_floating_point():
        raise ConfigError(f"{name} images must be floats in [0, 1], got dtype {images.dtype}")
    return images


def check_domains(source: LabelledImages, target: object, *, target_name: str = "target") -> torch.Tensor:
    """Validate a source/target pair; return the target images.

    Errors (:class:`ConfigError`, one line each): a source that is not a non-empty
    ``LabelledImages``, an empty target, different input shapes (both named), and, when the
    target carries labels, a label set different from the source's (class names, or labels
    that no source sample has).
    """
    if not isinstance(source, LabelledImages):
        raise ConfigError(f"source must be a LabelledImages (labelled images), got {type(source).__name__}")
    if len(source) == 0:
        raise ConfigError("the source set is empty")
    images = target_images(target, target_name)
    if tuple(images.shape[1:]) != tuple(source.images.shape[1:]):
        raise ConfigError(
            f"source and {target_name} must have the same input shape, got source "
            f"{'x'.join(map(str, source.images.shape[1:]))} and {target_name} {'x'.join(map(str, images.shape[1:]))}"
        )
    if isinstance(target, LabelledImages):
        if list(target.class_names) != list(source.class_names):
            raise ConfigError(
                f"source and {target_name} must have the same label set, got {source.num_classes} source classes "
                f"and {target.num_classes} {target_name} classes (or the same count with different names)"
            )
        missing = sorted(set(torch.unique(target.targets).tolist()) - set(torch.unique(source.targets).tolist()))
        if missing:
            names = ", ".join(str(source.class_names[i]) for i in missing[:3])
            raise ConfigError(f"{target_name} has labels that no source sample has: {names}"
                              f"{' ...' if len(missing) > 3 else ''} ({len(missing)} classes)")
    return images


def build_classifier(backbone: str | Backbone, num_classes: int, image_shape: Sequence[int],
                     backbone_kwargs: dict[str, Any] | None = None) -> Backbone:
    """A registry backbone (by name, sized for ``image_shape``) or a given one, with a fresh head."""
    if isinstance(backbone, str):
        kwargs = dict(backbone_kwargs or {})
        if backbone == "mlp":
            kwargs.setdefault("in_features", math.prod(image_shape))
        else:
            kwargs.setdefault("in_channels", int(image_shape[0]))
            kwargs.setdefault("image_size", int(image_shape[1]))
        model = create_backbone(backbone, **kwargs)
    elif isinstance(backbone, Backbone):
        if backbone_kwargs:
            raise ConfigError("backbone_kwargs apply to a backbone given by name, not to a built module")
        model = backbone
    else:
        raise ConfigError(f"backbone must be a registry name or a Backbone, got {type(backbone).__name__}")
    if not isinstance(model, Backbone):
        raise ConfigError(f"backbone {backbone!r} did not build a Backbone (features + head)")
    model.check_input(torch.zeros(1, *image_shape))
    model.reset_head(int(num_classes))
    return model


def domain_discriminator(in_features: int, hidden: Sequence[int] = (100,)) -> nn.Sequential:
    """A domain classifier on features: ``Linear-ReLU`` layers of sizes ``hidden``, then one logit."""
    layers: list[nn.Module] = []
    width = int(in_features)
    for i, size in enumerate(hidden):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"discriminator_hidden[{i}] must be a positive integer, got {size!r}")
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


@torch.no_grad()
def extract_features(model: Backbone, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Feature vectors ``[N, out_features]`` of ``images`` (trunk only, eval mode), on the CPU."""
    trunk = _FeaturesOnly(model)
    return predict_logits(trunk, images, batch_size)


class _FeaturesOnly(nn.Module):
    def __init__(self, model: Backbone) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def index_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled mini-batches of positions ``0..n-1`` (a fresh permutation per pass)."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield order[start:start + batch_size]


def random_translate(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Move each image of ``x`` by its own random offset in ``[-pixels, pixels]`` along both axes.

    Borders are filled by repeating the edge pixels, so textured backgrounds get no black frame.
    """
    if pixels == 0:
        return x
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2), generator=generator)
    padded = F.pad(x, (pixels, pixels, pixels, pixels), mode="replicate")
    rows = (offsets[:, :1] + torch.arange(h)).to(x.device)  # [N, H]
    cols = (offsets[:, 1:] + torch.arange(w)).to(x.device)  # [N, W]
    idx = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
