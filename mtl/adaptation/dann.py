"""DANN: domain-adversarial training of neural networks (Ganin and Lempitsky 2015, "Unsupervised
Domain Adaptation by Backpropagation"; Ganin et al. 2016, JMLR).

A feature extractor feeds both a label classifier (trained on labelled source images) and, through
a gradient reversal layer, a domain classifier (trained on source and target images to tell them
apart). Minimising ``class loss + domain loss`` by plain backpropagation trains the domain
classifier to separate the domains while the reversed gradient pushes the features to make them
indistinguishable, i.e. to shrink the H-divergence that bounds the target error (Ben-David et al.
2010). The reversal factor follows ``lambda_p = 2 / (1 + exp(-gamma p)) - 1``; the learning
rate optionally follows the paper's ``mu_p = mu_0 / (1 + 10 p)^0.75``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mtl.adaptation.common import (
    AdaptationResult,
    AdaptConfig,
    build_classifier,
    check_domains,
    domain_discriminator,
    index_batches,
    random_translate,
)
from mtl.adaptation.grl import GradientReversal, ganin_lambda
from mtl.backbones.base import Backbone
from mtl.data.base import LabelledImages
from mtl.errors import ConfigError
from mtl.training import evaluate_classifier, make_optimizer
from mtl.utils.precision import autocast
from mtl.utils.runtime import Budget

__all__ = ["DANN", "DANNConfig", "train_dann"]


@dataclass
class DANNConfig(AdaptConfig):
    """Settings of :func:`train_dann` (besides :class:`AdaptConfig`'s).

    ``gamma``: steepness of Ganin's reversal schedule (10); ``domain_weight``: the final reversal
    factor (``lambda_p`` is multiplied by it, 1 in the paper); ``discriminator_hidden``: hidden
    sizes of the domain classifier; ``lr_anneal``: Ganin's ``mu_0 / (1 + 10 p)^0.75`` schedule.
    """

    gamma: float = 10.0
    domain_weight: float = 1.0
    discriminator_hidden: Sequence[int] = (100,)
    lr_anneal: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        super().validate()
        ganin_lambda(0.0, self.gamma)
        if isinstance(self.domain_weight, bool) or not isinstance(self.domain_weight, (int, float)) \
                or not self.domain_weight >= 0:
            raise ConfigError(f"domain_weight must be a number >= 0, got {self.domain_weight!r}")


class DANN(nn.Module):
    """The DANN network (Ganin and Lempitsky 2015): a classifier :class:`Backbone` (features + head)
    and a domain classifier behind a :class:`GradientReversal` on the features.

    ``forward(x)`` gives class logits; :meth:`domain_logits` the domain logit (target = 1) of
    feature vectors, through the reversal layer.
    """

    def __init__(self, classifier: Backbone, discriminator_hidden: Sequence[int] = (100,), gamma: float = 10.0) -> None:
        super().__init__()
        if classifier.head is None:
            raise ConfigError("the DANN classifier needs a head (build it with num_classes)")
        self.classifier = classifier
        self.reversal = GradientReversal(0.0, gamma)
        self.discriminator = domain_discriminator(classifier.out_features, discriminator_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of ``x``."""
        return self.classifier(x)

    def domain_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Domain logits ``[B]`` (positive = target) of feature vectors, through the reversal layer."""
        return self.discriminator(self.reversal(features)).squeeze(1)


def train_dann(
    backbone: str | Backbone,
    source: LabelledImages,
    target: object,
    config: DANNConfig | None = None,
    *,
    backbone_kwargs: dict[str, Any] | None = None,
    val: LabelledImages | None = None,
    device: torch.device | str = "cpu",
    budget: Budget | None = None,
    log: Callable[[str], None] | None = None,
) -> AdaptationResult:
    """Train DANN (Ganin and Lempitsky 2015) from labelled ``source`` and unlabelled ``target`` images.

    ``backbone`` is a registry name (built for the source's input shape with ``backbone_kwargs``)
    or a built :class:`Backbone`. ``target`` is a tensor, a ``LabelledImages`` (labels unused;
    the label set must match the source's) or an ``UnlabelledImages``. Each step takes
    ``batch_size`` images of each domain through the feature extractor together; the loss is the
    source cross-entropy plus the domain cross-entropy, whose gradient reaches the features
    reversed and scaled by ``domain_weight * lambda_p``. ``val`` (labelled target images) adds the
    target accuracy to the history at every logged step. Returns the trained classifier.
    """
    config = config or DANNConfig()
    config.validate()
    target_x = check_domains(source, target)
    if val is not None:
        check_domains(source, val, target_name="val")
    device = torch.device(device)
    torch.manual_seed(config.seed)
    classifier = build_classifier(backbone, source.num_classes, source.image_shape, backbone_kwargs)
    model = DANN(classifier, config.discriminator_hidden, config.gamma).to(device)
    opt = make_optimizer(list(model.parameters()), config.optimizer, config.lr, config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    aug_gen = torch.Generator().manual_seed(config.seed + 1)
    src_batches = index_batches(len(source), config.batch_size, gen)
    tgt_batches = index_batches(len(target_x), config.batch_size, gen)
    history: list[dict[str, float]] = []
    sums = {"class_loss": 0.0, "domain_loss": 0.0, "domain_accuracy": 0.0}
    count, step = 0, 0
    if budget is not None:
        budget.restart()
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=config.steps, disable=not config.progress, desc="dann", unit="step", leave=False)
    try:
        for step in range(1, config.steps + 1):
            progress = (step - 1) / config.steps
            lam = ganin_lambda(progress, config.gamma) * config.domain_weight
            model.reversal.scale = lam
            if config.lr_anneal:
                for group in opt.param_groups:
                    group["lr"] = config.lr / (1.0 + 10.0 * progress) ** 0.75
            si, ti = next(src_batches), next(tgt_batches)
            xs, ys = source.images[si].to(device), source.targets[si].to(device)
            xt = target_x[ti].to(device)
            with autocast(device, config.precision):
                feats = classifier.forward_features(random_translate(torch.cat([xs, xt]), config.translate, aug_gen))
                class_logits, dom_logits = classifier.head(feats[: len(xs)]), model.domain_logits(feats)
            class_logits, dom_logits = class_logits.float(), dom_logits.float()
            class_loss = F.cross_entropy(class_logits, ys)
            domains = torch.cat([torch.zeros(len(xs)), torch.ones(len(xt))]).to(device)
            domain_loss = F.binary_cross_entropy_with_logits(dom_logits, domains)
            loss = class_loss + domain_loss
            if not torch.isfinite(loss):
                raise ConfigError(f"DANN loss became {loss.item()} at step {step}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums["class_loss"] += float(class_loss.detach())
            sums["domain_loss"] += float(domain_loss.detach())
            sums["domain_accuracy"] += float(((dom_logits.detach() > 0).float() == domains).float().mean())
            count += 1
            bar.update(1)
            stop = budget is not None and budget.exhausted(step)
            if step % config.log_every == 0 or step == config.steps or stop:
                row = {"step": step, "lambda": lam, **{k: v / count for k, v in sums.items()}}
                if val is not None:
                    row["val_accuracy"] = evaluate_classifier(classifier, val, device=device)["accuracy"]
                    model.train()
                history.append(row)
                sums = dict.fromkeys(sums, 0.0)
                count = 0
                bar.set_postfix(dom_acc=f"{row['domain_accuracy']:.2f}", lam=f"{lam:.2f}")
                if log is not None:
                    log("dann step {step}: class loss {class_loss:.3f}, domain loss {domain_loss:.3f}, domain accuracy "
                        "{domain_accuracy:.3f}, lambda {lambda:.3f}".format(**row)
                        + (f", target val accuracy {row['val_accuracy']:.3f}" if "val_accuracy" in row else ""))
            if stop:
                break
    finally:
        bar.close()
    classifier.eval()
    return AdaptationResult("dann", classifier, classifier, history, step, time.perf_counter() - start)
