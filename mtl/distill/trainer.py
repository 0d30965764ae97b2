"""Teacher -> student training with the knowledge-distillation loss (Hinton, Vinyals and Dean 2015).

:func:`distill` trains a student (any registry backbone, a factory or a module) on a labelled set
with :func:`~mtl.distill.losses.kd_loss`, taught by a teacher that may be one classifier, an
ensemble of them, or already-cached logits. The teacher is frozen throughout: by default its
logits are computed once and looked up by sample position (:class:`~mtl.distill.teachers.CachedLogits`).
:func:`train_from_scratch` is the same loop without a teacher (``alpha = 1``), the baseline.
The optimisation loop itself is :func:`mtl.training.train_classifier` with a ``batch_loss`` hook.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from mtl.backbones import create_backbone
from mtl.data.augment import random_shift
from mtl.data.base import LabelledImages
from mtl.distill.losses import check_alpha, check_temperature, kd_loss
from mtl.distill.teachers import CachedLogits, EnsembleTeacher, agreement, count_classes
from mtl.errors import ConfigError
from mtl.training import OPTIMIZERS, TrainHistory, predict_logits, train_classifier
from mtl.utils.precision import check_precision
from mtl.utils.runtime import Budget

__all__ = [
    "DistillConfig",
    "DistillResult",
    "StudentSpec",
    "TeacherSpec",
    "build_model",
    "distill",
    "random_shift",
    "train_from_scratch",
]

StudentSpec = str | Callable[[], nn.Module] | nn.Module
"""A registry backbone name (built with the training set's number of classes), a factory, or a module."""

TeacherSpec = nn.Module | Sequence[nn.Module] | CachedLogits
"""One classifier, several (averaged by :class:`EnsembleTeacher`), or their cached logits."""


def _check_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass
class DistillConfig:
    """Options of :func:`distill` (Hinton et al. 2015).

    Attributes:
        temperature: softmax temperature ``T > 0`` of the soft term (Hinton et al. used 1-20).
        alpha: weight of the hard-label cross-entropy, in ``[0, 1]``; the soft term weighs
            ``(1 - alpha) * T^2``. ``1`` is plain training, ``0`` soft targets only.
        epochs, batch_size, lr, optimizer, weight_decay: as in :func:`mtl.training.train_classifier`.
        shift: random translation of the student's training images by up to this many pixels.
        cache_teacher: compute the frozen teacher's logits once, on the clean training images,
            and look them up by sample position (default); ``False`` runs the teacher on every
            (augmented) batch, so it sees exactly the student's view, at one extra forward pass per step.
        seed: seeds the student's initialisation, the shuffling and the shifts.
        precision: ``"bf16"`` trains the student's forward passes under bfloat16 autocast
            (:mod:`mtl.utils.precision`); the teacher's logits and the loss stay float32.
        progress: show a progress bar.
    """

    temperature: float = 4.0
    alpha: float = 0.5
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    shift: int = 0
    cache_teacher: bool = True
    seed: int = 0
    precision: str = "fp32"
    progress: bool = False

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        check_precision(self.precision)
        check_alpha(self.alpha)
        _check_int("epochs", self.epochs)
        _check_int("batch_size", self.batch_size)
        _check_int("shift", self.shift, minimum=0)
        _check_int("seed", self.seed, minimum=0)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (
            self.lr > 0 and math.isfinite(self.lr)
        ):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")


@dataclass
class DistillResult:
    """A trained student and how it did (Hinton et al. 2015).

    ``accuracy`` is the student's test accuracy, ``teacher_accuracy`` the teacher's (when a
    teacher module or reference is known), ``agreement`` the fraction of test samples on which
    student and teacher (or the reference) predict the same class. ``test_logits`` are the
    student's test outputs (``None`` without a test set).
    """

    model: nn.Module
    history: TrainHistory
    accuracy: float | None
    teacher_accuracy: float | None
    agreement: float | None
    seconds: float
    config: dict[str, Any]
    test_logits: torch.Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no model, no logits)."""
        return {"accuracy": self.accuracy, "teacher_accuracy": self.teacher_accuracy, "agreement": self.agreement,
                "steps": self.history.steps, "train_loss": self.history.train_loss, "seconds": self.seconds,
                "config": self.config}


def build_model(spec: StudentSpec, num_classes: int, backbone_kwargs: dict[str, Any] | None = None,
                seed: int = 0) -> nn.Module:
    """A classifier from a registry name (``num_classes`` outputs unless the kwargs say), a factory, or a module.

    A module is returned as is; names and factories are built under ``torch.manual_seed(seed)``, so one seed
    gives one initialisation.
    """
    if isinstance(spec, nn.Module):
        return spec
    torch.manual_seed(seed)
    if isinstance(spec, str):
        kwargs = {"num_classes": num_classes, **dict(backbone_kwargs or {})}
        return create_backbone(spec, **kwargs)
    if callable(spec):
        net = spec()
        if not isinstance(net, nn.Module):
            raise ConfigError(f"the model factory must return an nn.Module, got {type(net).__name__}")
        return net
    raise ConfigError(f"a model must be a registry backbone name, a factory or an nn.Module, got {type(spec).__name__}")


def _as_teacher(teacher: TeacherSpec | None) -> nn.Module | CachedLogits | None:
    if teacher is None or isinstance(teacher, (nn.Module, CachedLogits)):
        return teacher
    if isinstance(teacher, Sequence) and not isinstance(teacher, str):
        return EnsembleTeacher(list(teacher))
    raise ConfigError(f"teacher must be an nn.Module, a list of them (an ensemble) or CachedLogits, "
                      f"got {type(teacher).__name__}")


def _accuracy(logits: torch.Tensor | None, data: LabelledImages | None) -> float | None:
    if logits is None or data is None:
        return None
    return float((logits.argmax(1) == data.targets).float().mean())


def distill(
    teacher: TeacherSpec | None,
    student: StudentSpec,
    train: LabelledImages,
    config: DistillConfig | None = None,
    *,
    backbone_kwargs: dict[str, Any] | None = None,
    test: LabelledImages | None = None,
    reference: nn.Module | torch.Tensor | None = None,
    budget: Budget | None = None,
    device: torch.device | str = "cpu",
) -> DistillResult:
    """Train ``student`` on ``train`` with the knowledge-distillation loss of Hinton et al. 2015.

    The loss of a batch is :func:`~mtl.distill.losses.kd_loss` of the student's logits, the
    teacher's logits for the same samples and the labels. The teacher is frozen: it is used in
    eval mode without gradients (and put back in its former mode afterwards). With
    ``config.cache_teacher`` (default) its logits are computed once on the clean training images
    and looked up by sample position; a :class:`CachedLogits` may also be passed directly (it is
    checked against ``train``).

    Args:
        teacher: a classifier, a list of classifiers (an :class:`EnsembleTeacher` of their mean
            logits), cached logits, or ``None`` when ``config.alpha == 1`` (no teacher needed).
        student: a registry backbone name (built with ``train.num_classes`` outputs and
            ``backbone_kwargs`` under ``config.seed``), a factory, or a module (trained in place).
        train: the labelled training set.
        config: the options (default :class:`DistillConfig`).
        test: optional test set for accuracy and teacher agreement.
        reference: the model (or its ``[N_test, C]`` test logits) to measure agreement with;
            default the teacher when it is a module.
        budget: optional step or time limit.
        device: where to train.

    Raises:
        ConfigError: bad options; no teacher while ``alpha < 1``; a teacher, student and training
            set that disagree on the number of classes; or cached logits for other samples.
    """
    cfg = config or DistillConfig()
    if not isinstance(train, LabelledImages) or len(train) == 0:
        raise ConfigError("the training set must be a non-empty LabelledImages")
    device = torch.device(device)
    teach = _as_teacher(teacher)
    if teach is None and cfg.alpha < 1:
        raise ConfigError(f"no teacher given: only alpha=1 (plain cross-entropy) trains without one, got "
                          f"alpha={cfg.alpha}")
    if cfg.alpha == 1:
        teach_for_loss = None
    else:
        teach_for_loss = teach
    net = build_model(student, train.num_classes, backbone_kwargs, cfg.seed).to(device)
    n_student = count_classes(net, train.images)
    if isinstance(teach, nn.Module):
        teach.to(device)
    if teach is not None:
        n_teacher = teach.num_classes if isinstance(teach, CachedLogits) else count_classes(teach, train.images)
        if n_teacher != n_student:
            raise ConfigError(f"the teacher predicts {n_teacher} classes but the student predicts {n_student}; "
                              "both must predict the classes of the training set")
    if n_student != train.num_classes:
        raise ConfigError(f"the student predicts {n_student} classes but the training set has {train.num_classes}")
    if isinstance(teach, CachedLogits):
        teach.check(train)

    start = time.perf_counter()
    cache: CachedLogits | None = None
    if isinstance(teach_for_loss, CachedLogits):
        cache = teach_for_loss
    elif isinstance(teach_for_loss, nn.Module) and cfg.cache_teacher:
        cache = CachedLogits.from_teacher(teach_for_loss, train, device=device)
    teacher_mode = teach.training if isinstance(teach, nn.Module) else None
    shift_gen = torch.Generator().manual_seed(cfg.seed + 1)

    def batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        x = random_shift(x, cfg.shift, shift_gen)
        teacher_logits = None
        if cache is not None:
            teacher_logits = cache[index]
        elif teach_for_loss is not None:
            with torch.no_grad():
                teacher_logits = teach_for_loss(x)
        return kd_loss(model(x), teacher_logits, y, cfg.temperature, cfg.alpha)

    try:
        if isinstance(teach, nn.Module):
            teach.eval()
        history = train_classifier(
            net, train, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
            weight_decay=cfg.weight_decay, batch_loss=batch_loss, seed=cfg.seed, budget=budget, device=device,
            progress=cfg.progress, desc="distill" if teach_for_loss is not None else "train",
            precision=cfg.precision,
        )
        test_logits = predict_logits(net, test.images, device=device) if test is not None and len(test) else None
        ref_logits = None
        if test_logits is not None:
            ref = reference if reference is not None else teach if isinstance(teach, nn.Module) else None
            if isinstance(ref, nn.Module):
                ref_logits = predict_logits(ref, test.images, device=device)
            elif isinstance(ref, torch.Tensor):
                ref_logits = ref.detach().cpu()
    finally:
        if teacher_mode is not None:
            teach.train(teacher_mode)
    return DistillResult(
        model=net, history=history, accuracy=_accuracy(test_logits, test),
        teacher_accuracy=_accuracy(ref_logits, test),
        agreement=agreement(test_logits, ref_logits) if ref_logits is not None else None,
        seconds=time.perf_counter() - start, config=asdict(cfg), test_logits=test_logits,
    )


def train_from_scratch(
    student: StudentSpec,
    train: LabelledImages,
    config: DistillConfig | None = None,
    *,
    backbone_kwargs: dict[str, Any] | None = None,
    test: LabelledImages | None = None,
    reference: nn.Module | torch.Tensor | None = None,
    budget: Budget | None = None,
    device: torch.device | str = "cpu",
) -> DistillResult:
    """The no-teacher baseline: :func:`distill` with ``alpha = 1`` (plain cross-entropy), same schedule.

    Everything else (initialisation seed, shuffling, shifts, epochs) is as in ``config``, so a
    distilled student and its baseline differ only in the loss. ``reference`` (a teacher, or its
    test logits) gives the agreement a student reaches without being taught (Hinton et al. 2015).
    """
    cfg = replace(config or DistillConfig(), alpha=1.0)
    return distill(None, student, train, cfg, backbone_kwargs=backbone_kwargs, test=test, reference=reference,
                   budget=budget, device=device)
