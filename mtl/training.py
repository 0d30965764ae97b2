"""Plain supervised training shared by transfer, distillation, self-training and domain adaptation.

:func:`train_classifier` runs mini-batch training of any model on in-memory tensors with a
progress bar, an optional per-batch loss override (for distillation, pseudo-labels, ...),
validation and a history; :func:`evaluate_classifier` and :func:`predict_logits` go with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mtl.data.base import LabelledImages
from mtl.errors import ConfigError
from mtl.utils.precision import autocast, check_precision
from mtl.utils.runtime import Budget

BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(model, x, y, index) -> loss`` for one mini-batch; ``index`` are the samples' positions."""

StepHook = Callable[[nn.Module, int], None]
"""``(model, step) -> None``, called after every optimizer step (e.g. to update an EMA teacher)."""

OPTIMIZERS = ("adam", "sgd")


@dataclass
class TrainHistory:
    """Per-epoch training loss and, when a validation set is given, validation accuracy."""

    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def make_optimizer(params: list[nn.Parameter] | list[dict], name: str = "adam", lr: float = 1e-3,
                   weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum (0.9 by default, the usual fine-tuning choice)."""
    _check_positive("lr", lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


class AutocastForward(nn.Module):
    """``model``'s forward pass under bfloat16 autocast, its outputs returned in float32.

    :func:`train_classifier` hands this to the batch loss for ``precision="bf16"``, so the
    network's matrix products and convolutions run in bfloat16 (Micikevicius et al. 2018;
    Kalamkar et al. 2019) while every loss (cross-entropy, KL to a teacher, soft targets) is
    computed in float32 from the float32 logits.
    """

    def __init__(self, model: nn.Module, device: torch.device | str) -> None:
        super().__init__()
        self.model = model
        self.device_type = torch.device(device).type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device_type, "bf16"):
            out = self.model(x)
        return out.float()


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The default batch loss: cross-entropy of the model's logits."""
    return F.cross_entropy(model(x), y)


def train_classifier(
    model: nn.Module,
    data: LabelledImages,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    optimizer: str | torch.optim.Optimizer = "adam",
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    weight_decay: float = 0.0,
    batch_loss: BatchLoss = cross_entropy_loss,
    after_step: StepHook | None = None,
    val: LabelledImages | None = None,
    budget: Budget | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "train",
    precision: str = "fp32",
) -> TrainHistory:
    """Mini-batch training of ``model`` on ``data`` (shuffled by ``seed``), one scheduler step per epoch.

    Only parameters with ``requires_grad`` are optimised, so frozen layers get no optimizer
    state. A non-finite loss stops training with a :class:`ConfigError` naming the step.
    ``after_step(model, step)`` runs after each optimizer step (``step`` counts from 1).
    ``precision="bf16"`` runs the model's forward passes (and so their backward) under bfloat16
    autocast (:class:`AutocastForward` is what ``batch_loss`` receives as its model); weights,
    gradients, optimizer state, losses and validation stay float32.
    """
    check_precision(precision)
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(data) == 0:
        raise ConfigError("the training set is empty")
    device = torch.device(device)
    model.to(device)
    forward = AutocastForward(model, device) if precision == "bf16" else model
    if isinstance(optimizer, str):
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ConfigError("the model has no trainable parameters (everything is frozen)")
        opt = make_optimizer(trainable, optimizer, lr, weight_decay)
    else:
        opt = optimizer
    generator = torch.Generator().manual_seed(seed)
    history = TrainHistory()
    budget = budget or Budget(iterations=10**12)
    budget.restart()
    steps_per_epoch = math.ceil(len(data) / batch_size)
    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, desc=desc, unit="step",
               dynamic_ncols=True, leave=False)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(len(data), generator=generator)
            total, count = 0.0, 0
            for start in range(0, len(data), batch_size):
                index = order[start:start + batch_size]
                x, y = data.images[index].to(device), data.targets[index].to(device)
                loss = batch_loss(forward, x, y, index.to(device))
                if not torch.isfinite(loss):
                    raise ConfigError(f"training loss became {loss.item()} at step {history.steps + 1}; "
                                      "lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                history.steps += 1
                if after_step is not None:
                    after_step(model, history.steps)
                total += float(loss.detach()) * len(index)
                count += len(index)
                bar.update(1)
                if budget.exhausted(history.steps):
                    break
            if scheduler is not None:
                scheduler.step()
            history.epochs.append(epoch)
            history.train_loss.append(total / max(count, 1))
            if val is not None:
                history.val_accuracy.append(evaluate_classifier(model, val, device=device)["accuracy"])
                bar.set_postfix(val_acc=f"{history.val_accuracy[-1]:.3f}")
            if budget.exhausted(history.steps):
                break
    finally:
        bar.close()
    history.seconds = budget.elapsed()
    return history


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 512,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Model outputs for ``images`` in eval mode, computed in batches, returned on the CPU."""
    if device is None:
        ref = next(model.parameters(), None)
        device = ref.device if ref is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        outs = [model(images[i:i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    if not outs:
        raise ConfigError("no images to predict")
    return torch.cat(outs)


def evaluate_classifier(model: nn.Module, data: LabelledImages, batch_size: int = 512,
                        device: torch.device | str | None = None) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``data``."""
    logits = predict_logits(model, data.images, batch_size, device)
    targets = data.targets
    return {
        "accuracy": float((logits.argmax(1) == targets).float().mean()),
        "loss": float(F.cross_entropy(logits, targets)),
    }
