"""Reference points for domain adaptation: source-only, target-supervised, and AdaBN.

*Source-only* trains on labelled source images and is tested on the target: the lower bound an
adaptation method must beat. *Target-supervised* trains on the labelled target images that the
adaptation methods see without labels: the upper bound. :func:`adapt_batch_norm` (AdaBN, Li et
al. 2016, "Revisiting Batch Normalization For Practical Domain Adaptation") re-estimates the
BatchNorm statistics of a source model on target images, with no training: a cheap control that
shows how much of a gain comes from normalisation statistics alone.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtl.adaptation.common import AdaptationResult, AdaptConfig, build_classifier, random_translate, target_images
from mtl.backbones.base import Backbone
from mtl.data.base import LabelledImages
from mtl.errors import ConfigError
from mtl.training import train_classifier
from mtl.utils.runtime import Budget

__all__ = ["adapt_batch_norm", "train_source_only", "train_target_supervised"]


def _train_supervised(method: str, backbone: str | Backbone, data: LabelledImages, config: AdaptConfig,
                      backbone_kwargs: dict[str, Any] | None, device: torch.device | str,
                      budget: Budget | None) -> AdaptationResult:
    config.validate()
    role = "source" if method == "source-only" else "target"
    if not isinstance(data, LabelledImages):
        raise ConfigError(f"the {role} set must be a LabelledImages (labelled images), got {type(data).__name__}")
    if len(data) == 0:
        raise ConfigError(f"the {role} set is empty")
    torch.manual_seed(config.seed)
    model = build_classifier(backbone, data.num_classes, data.image_shape, backbone_kwargs)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    iterations = config.steps if budget is None or budget.iterations is None else min(config.steps, budget.iterations)
    budget = Budget(seconds=None if budget is None else budget.seconds, iterations=iterations,
                    clock="wall" if budget is None else budget.clock)
    gen = torch.Generator().manual_seed(config.seed + 1)

    def batch_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(net(random_translate(x, config.translate, gen)), y)

    start = time.perf_counter()
    hist = train_classifier(model, data, epochs=math.ceil(config.steps / steps_per_epoch), batch_size=config.batch_size,
                            lr=config.lr, optimizer=config.optimizer, weight_decay=config.weight_decay, budget=budget,
                            batch_loss=batch_loss, seed=config.seed, device=device, progress=config.progress,
                            desc=method, precision=config.precision)
    history = [{"step": min(e * steps_per_epoch, hist.steps), "class_loss": loss}
               for e, loss in zip(hist.epochs, hist.train_loss)]
    return AdaptationResult(method, model, model, history, hist.steps, time.perf_counter() - start)


def train_source_only(backbone: str | Backbone, source: LabelledImages, config: AdaptConfig | None = None, *,
                      backbone_kwargs: dict[str, Any] | None = None, device: torch.device | str = "cpu",
                      budget: Budget | None = None) -> AdaptationResult:
    """Train ``backbone`` (a registry name or a built :class:`Backbone`) on the labelled source only.

    The no-adaptation baseline of Ganin and Lempitsky 2015 and Tzeng et al. 2017; its model is
    also where ADDA starts.
    """
    return _train_supervised("source-only", backbone, source, config or AdaptConfig(), backbone_kwargs, device, budget)


def train_target_supervised(backbone: str | Backbone, target: LabelledImages, config: AdaptConfig | None = None, *,
                            backbone_kwargs: dict[str, Any] | None = None, device: torch.device | str = "cpu",
                            budget: Budget | None = None) -> AdaptationResult:
    """Train on the *labelled* target set: the upper bound ("train on target") of Ganin and Lempitsky 2015."""
    return _train_supervised("target-supervised", backbone, target, config or AdaptConfig(), backbone_kwargs, device,
                             budget)


@torch.no_grad()
def adapt_batch_norm(model: Backbone, target: object, batch_size: int = 256) -> Backbone:
    """A copy of ``model`` whose BatchNorm statistics are re-estimated on the target images (AdaBN, Li et al. 2016).

    Running means and variances are reset and replaced by the exact average over the target set;
    no weight changes. A model without BatchNorm is returned as an unchanged copy.
    """
    images = target_images(target)
    adapted = copy.deepcopy(model)
    norms = [m for m in adapted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return adapted
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    device = next(adapted.parameters()).device
    adapted.train()
    for start in range(0, len(images), batch_size):
        adapted.forward_features(images[start:start + batch_size].to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    adapted.eval()
    return adapted
