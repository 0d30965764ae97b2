"""ADDA: adversarial discriminative domain adaptation (Tzeng, Hoffman, Saenko and Darrell, CVPR 2017).

Three stages: (1) pre-train a source encoder and classifier on labelled source images (the
source-only model); (2) initialise a *separate* target encoder as a copy of the source encoder
and train it adversarially, GAN-style with inverted labels, against a domain discriminator that
tells fixed source features from target features; (3) classify target images with the target
encoder and the unchanged source classifier. Unlike DANN the weights are untied: the target
encoder can move away from the source one, and the source classifier is never retrained.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mtl.adaptation.common import (
    AdaptationResult,
    AdaptConfig,
    check_domains,
    domain_discriminator,
    index_batches,
    random_translate,
)
from mtl.backbones.base import Backbone
from mtl.data.base import LabelledImages
from mtl.errors import ConfigError
from mtl.training import evaluate_classifier
from mtl.utils.precision import autocast
from mtl.utils.runtime import Budget

__all__ = ["ADDAConfig", "train_adda"]


@dataclass
class ADDAConfig(AdaptConfig):
    """Settings of the adversarial stage of :func:`train_adda` (besides :class:`AdaptConfig`'s).

    The defaults follow Tzeng et al. 2017: Adam with ``lr = 2e-4`` and ``betas = (0.5, 0.999)``
    for both players, and a discriminator with two hidden layers of 500 units.
    ``discriminator_lr`` (default: ``lr``) sets the discriminator's learning rate apart.
    """

    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    discriminator_hidden: Sequence[int] = (500, 500)
    discriminator_lr: float | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        super().validate()
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.discriminator_lr is not None and not self.discriminator_lr > 0:
            raise ConfigError(f"discriminator_lr must be > 0, got {self.discriminator_lr!r}")


def train_adda(
    source_model: Backbone,
    source: LabelledImages,
    target: object,
    config: ADDAConfig | None = None,
    *,
    val: LabelledImages | None = None,
    device: torch.device | str = "cpu",
    budget: Budget | None = None,
    log: Callable[[str], None] | None = None,
) -> AdaptationResult:
    """The adversarial stage of ADDA (Tzeng et al. 2017), starting from a trained ``source_model``.

    ``source_model`` is a :class:`Backbone` with a head trained on ``source`` (for example the
    ``model`` of :func:`~mtl.adaptation.baselines.train_source_only`); it is not modified. Each
    step the discriminator learns to label source features 1 and target features 0, then the
    target encoder (a copy of the source encoder; its BatchNorm statistics follow the target
    images) learns to make the discriminator say 1 for target features. Returns the target
    classifier (target encoder + source head) as ``model`` and the source model as
    ``source_model``.
    """
    config = config or ADDAConfig()
    config.validate()
    if not isinstance(source_model, Backbone) or source_model.head is None:
        raise ConfigError("source_model must be a trained Backbone with a head (e.g. train_source_only(...).model)")
    target_x = check_domains(source, target)
    if val is not None:
        check_domains(source, val, target_name="val")
    if source_model.num_classes != source.num_classes:
        raise ConfigError(f"source_model has {source_model.num_classes} outputs but the source has "
                          f"{source.num_classes} classes")
    device = torch.device(device)
    torch.manual_seed(config.seed)
    source_model = source_model.to(device).eval()
    target_model = copy.deepcopy(source_model)
    for p in target_model.head.parameters():
        p.requires_grad_(False)
    discriminator = domain_discriminator(source_model.out_features, config.discriminator_hidden).to(device)
    opt_t = torch.optim.Adam(target_model.features.parameters(), lr=config.lr, betas=config.betas,
                             weight_decay=config.weight_decay)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.discriminator_lr or config.lr, betas=config.betas)
    gen = torch.Generator().manual_seed(config.seed)
    aug_gen = torch.Generator().manual_seed(config.seed + 1)
    src_batches = index_batches(len(source), config.batch_size, gen)
    tgt_batches = index_batches(len(target_x), config.batch_size, gen)
    history: list[dict[str, float]] = []
    sums = {"discriminator_loss": 0.0, "encoder_loss": 0.0, "domain_accuracy": 0.0}
    count, step = 0, 0
    if budget is not None:
        budget.restart()
    start = time.perf_counter()
    target_model.train()
    bar = tqdm(total=config.steps, disable=not config.progress, desc="adda", unit="step", leave=False)
    try:
        for step in range(1, config.steps + 1):
            xs = random_translate(source.images[next(src_batches)].to(device), config.translate, aug_gen)
            xt = random_translate(target_x[next(tgt_batches)].to(device), config.translate, aug_gen)
            with autocast(device, config.precision):
                with torch.no_grad():
                    fs = source_model.forward_features(xs)
                ft = target_model.forward_features(xt)
                # Discriminator: source = 1, target = 0.
                d_src, d_tgt = discriminator(fs).squeeze(1).float(), discriminator(ft.detach()).squeeze(1).float()
            d_loss = 0.5 * (F.binary_cross_entropy_with_logits(d_src, torch.ones_like(d_src))
                            + F.binary_cross_entropy_with_logits(d_tgt, torch.zeros_like(d_tgt)))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # Target encoder: the inverted-label GAN loss (make target features look like source).
            with autocast(device, config.precision):
                g_logits = discriminator(ft).squeeze(1).float()
            g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
            if not (torch.isfinite(d_loss) and torch.isfinite(g_loss)):
                raise ConfigError(f"ADDA loss became non-finite at step {step}; lower the learning rate")
            opt_t.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_t.step()
            sums["discriminator_loss"] += float(d_loss.detach())
            sums["encoder_loss"] += float(g_loss.detach())
            sums["domain_accuracy"] += 0.5 * float((d_src > 0).float().mean() + (d_tgt <= 0).float().mean())
            count += 1
            bar.update(1)
            stop = budget is not None and budget.exhausted(step)
            if step % config.log_every == 0 or step == config.steps or stop:
                row = {"step": step, **{k: v / count for k, v in sums.items()}}
                if val is not None:
                    row["val_accuracy"] = evaluate_classifier(target_model, val, device=device)["accuracy"]
                    target_model.train()
                history.append(row)
                sums = dict.fromkeys(sums, 0.0)
                count = 0
                bar.set_postfix(dom_acc=f"{row['domain_accuracy']:.2f}")
                if log is not None:
                    log("adda step {step}: discriminator loss {discriminator_loss:.3f}, encoder loss "
                        "{encoder_loss:.3f}, domain accuracy {domain_accuracy:.3f}".format(**row)
                        + (f", target val accuracy {row['val_accuracy']:.3f}" if "val_accuracy" in row else ""))
            if stop:
                break
    finally:
        bar.close()
    target_model.eval()
    for p in target_model.head.parameters():
        p.requires_grad_(True)
    return AdaptationResult("adda", target_model, source_model, history, step, time.perf_counter() - start)
