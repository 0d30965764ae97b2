"""Self-training with pseudo-labels: the classic round-based loop and the online variant.

Self-training goes back to Scudder 1965 ("Probability of error of some adaptive pattern-recognition
machines") and Yarowsky 1995 ("Unsupervised word sense disambiguation rivaling supervised
methods"): (1) train on the labelled data, (2) predict the unlabelled data, (3) keep only the most
confident predictions as new labels, (4) repeat. :func:`self_train` runs that loop over any
registry backbone; :func:`pseudo_label_online` is the variant of Lee 2013 ("Pseudo-Label: the
simple and efficient semi-supervised learning method for deep neural networks"), where every
training step adds a confidence-masked loss on an unlabelled batch. Both pick pseudo-labels with
the same function, :func:`select_pseudo_labels` (a confidence threshold, class-balanced top-k per
class, or both), and both can label with a mean teacher (:class:`EMATeacher`, Tarvainen and
Valpola 2017) instead of the student itself.

Training itself is :func:`mtl.training.train_classifier` with a ``batch_loss`` override; nothing
here has its own optimisation loop.

Both loops can write a checkpoint after every round (online: every epoch) and resume from it:
pass ``checkpoint=PATH`` and ``resume=True``. A resumed run ends with the same result as an
uninterrupted one with the same seed (bit-exact on CPU with a step or epoch budget; a wall-time
budget makes any run depend on the machine's speed).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtl.backbones import create_backbone
from mtl.data.augment import random_shift
from mtl.data.base import LabelledImages
from mtl.data.sprites import UnlabelledImages
from mtl.errors import CheckpointError, ConfigError, DatasetError
from mtl.training import OPTIMIZERS, make_optimizer, predict_logits, train_classifier
from mtl.utils.checkpoint import load_checkpoint_or_previous, save_checkpoint
from mtl.utils.precision import check_precision
from mtl.utils.resumable import config_differences
from mtl.utils.runtime import Budget

__all__ = [
    "LABEL_MODES",
    "EMATeacher",
    "OnlineConfig",
    "RoundStats",
    "SelfTrainConfig",
    "SelfTrainResult",
    "UnlabelledPool",
    "lee_alpha",
    "make_pool",
    "pseudo_label_online",
    "random_shift",
    "select_pseudo_labels",
    "self_train",
    "split_labelled_unlabelled",
]

LABEL_MODES = ("hard", "soft")
"""``hard``: the teacher's arg-max class (Lee 2013); ``soft``: its whole probability vector."""

PoolSource = UnlabelledImages | LabelledImages | torch.Tensor
ModelSpec = str | Callable[[], nn.Module]

# ----------------------------------------------------------------------------------- validation


def _check_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_threshold(threshold: object, name: str = "threshold") -> None:
    """Refuse a confidence threshold outside ``(0, 1]`` (Lee 2013 style selection needs a probability)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (0 < threshold <= 1):
        raise ConfigError(f"{name} must be a probability in (0, 1], got {threshold!r}")


def _check_selection(threshold: float | None, k_per_class: int | None) -> None:
    if threshold is None and k_per_class is None:
        raise ConfigError("pseudo-label selection needs a threshold in (0, 1] and/or k_per_class >= 1; got neither")
    if threshold is not None:
        check_threshold(threshold)
    if k_per_class is not None:
        _check_int("k_per_class", k_per_class)


def _check_common(cfg: SelfTrainConfig | OnlineConfig) -> None:
    _check_selection(cfg.threshold, cfg.k_per_class)
    if cfg.labels not in LABEL_MODES:
        raise ConfigError(f"labels must be one of {', '.join(LABEL_MODES)}, got {cfg.labels!r}")
    if cfg.ema_decay is not None and (
        isinstance(cfg.ema_decay, bool) or not isinstance(cfg.ema_decay, (int, float)) or not 0 < cfg.ema_decay < 1
    ):
        raise ConfigError(f"ema_decay must be in (0, 1) (e.g. 0.99), got {cfg.ema_decay!r}")
    for name in ("epochs", "batch_size"):
        _check_int(name, getattr(cfg, name))
    _check_int("shift", cfg.shift, minimum=0)
    _check_int("seed", cfg.seed, minimum=0)
    check_precision(cfg.precision)
    if not (isinstance(cfg.lr, (int, float)) and cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ConfigError(f"lr must be a finite number > 0, got {cfg.lr!r}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")


# ------------------------------------------------------------------------------------ selection


def select_pseudo_labels(
    probs: torch.Tensor,
    threshold: float | None = None,
    k_per_class: int | None = None,
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Positions of the predictions to keep as pseudo-labels (self-training, Yarowsky 1995; Lee 2013).

    An example's pseudo-label is its arg-max class and its confidence that class's probability.
    With ``threshold`` only examples with confidence ``>= threshold`` are kept; with
    ``k_per_class`` at most the ``k`` most confident examples *of each predicted class* are kept
    (class-balanced, so one dominant class cannot swallow the pool); with both, the top-k are
    taken among the examples above the threshold. Ties go to the lower position.

    Args:
        probs: ``[N, C]`` class probabilities (rows sum to 1).
        threshold: confidence threshold in ``(0, 1]``, or ``None``.
        k_per_class: at most this many per predicted class (``>= 1``), or ``None``.
        candidates: optional bool mask ``[N]``; only these rows may be selected (e.g. the
            examples still in the pool).

    Returns:
        long tensor of distinct row positions, ascending.

    Raises:
        ConfigError: neither criterion, a threshold outside ``(0, 1]``, ``k_per_class < 1``, or
            a malformed ``probs`` / ``candidates``.
    """
    _check_selection(threshold, k_per_class)
    if probs.dim() != 2:
        raise ConfigError(f"probs must have shape [N, C], got {tuple(probs.shape)}")
    confidence, predicted = probs.max(dim=1)
    keep = torch.ones(len(probs), dtype=torch.bool, device=probs.device)
    if candidates is not None:
        if candidates.shape != (len(probs),) or candidates.dtype != torch.bool:
            raise ConfigError(f"candidates must be a bool mask of shape [{len(probs)}], "
                              f"got {candidates.dtype} {tuple(candidates.shape)}")
        keep &= candidates.to(probs.device)
    if threshold is not None:
        keep &= confidence >= threshold
    index = torch.nonzero(keep).flatten()
    if k_per_class is None or len(index) == 0:
        return index
    # Most confident first (stable: ties keep position order), then grouped by class (stable).
    order = torch.sort(confidence[index], descending=True, stable=True).indices
    index = index[order]
    order = torch.sort(predicted[index], stable=True).indices
    index, cls = index[order], predicted[index[order]]
    counts = torch.bincount(cls, minlength=probs.shape[1])
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(index), device=index.device) - starts[cls]
    return torch.sort(index[rank < k_per_class]).values


def lee_alpha(epoch: int, alpha_final: float = 3.0, ramp_start: int = 1, ramp_end: int = 5) -> float:
    """Weight of the unlabelled loss at ``epoch`` (0-based), Lee 2013 eq. 16.

    0 before ``ramp_start``, a linear ramp to ``alpha_final`` until ``ramp_end``, then
    ``alpha_final`` (the paper: T1=100, T2=600 epochs, alpha_f=3).
    """
    if epoch < ramp_start:
        return 0.0
    if epoch >= ramp_end:
        return float(alpha_final)
    return float(alpha_final) * (epoch - ramp_start) / (ramp_end - ramp_start)


# ------------------------------------------------------------------------------------------ data


@dataclass
class UnlabelledPool:
    """Images to pseudo-label, with their true classes where known (``-1`` where not).

    The true classes are never used for training: they only measure pseudo-label precision
    (self-training, Scudder 1965; Yarowsky 1995). Build one with :func:`make_pool`.
    """

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def has_truth(self) -> bool:
        """Whether any pool example has a known class."""
        return bool((self.targets >= 0).any())


def make_pool(sources: PoolSource | Sequence[PoolSource]) -> UnlabelledPool:
    """Concatenate unlabelled images from any datasets into one :class:`UnlabelledPool` (Lee 2013).

    Each source is an :class:`~mtl.data.UnlabelledImages` (e.g. the Omniglot 28x28 sprite sheets),
    a ``[N, C, H, W]`` float tensor, or a :class:`~mtl.data.LabelledImages` whose labels are
    hidden from training and kept only to measure precision. All must share one image shape.

    Raises:
        ConfigError: no source, an empty pool, images that are not float ``[N, C, H, W]`` in
            ``[0, 1]``, or sources of different image shapes.
    """
    if isinstance(sources, (UnlabelledImages, LabelledImages, torch.Tensor)):
        sources = [sources]
    sources = list(sources)
    if not sources:
        raise ConfigError("the unlabelled pool is empty: give at least one source of images")
    images, targets = [], []
    for i, src in enumerate(sources):
        if isinstance(src, LabelledImages):
            x, y = src.images, src.targets
        elif isinstance(src, UnlabelledImages):
            x, y = src.images, None
        elif isinstance(src, torch.Tensor):
            x, y = src, None
        else:
            raise ConfigError(f"unlabelled source {i} must be UnlabelledImages, LabelledImages or a tensor, "
                              f"got {type(src).__name__}")
        if x.dim() != 4 or not x.is_floating_point():
            raise ConfigError(f"unlabelled source {i} must be a float tensor [N, C, H, W], "
                              f"got {x.dtype} {tuple(x.shape)}")
        if images and x.shape[1:] != images[0].shape[1:]:
            raise ConfigError(f"unlabelled sources have different image shapes: "
                              f"{_shape(images[0])} and {_shape(x)}")
        images.append(x)
        targets.append(y.long() if y is not None else torch.full((len(x),), -1, dtype=torch.long))
    pool = UnlabelledPool(torch.cat(images), torch.cat(targets))
    if len(pool) == 0:
        raise ConfigError("the unlabelled pool is empty (0 images); give at least one unlabelled image")
    lo, hi = float(pool.images.min()), float(pool.images.max())
    if lo < 0 or hi > 1 or not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(f"unlabelled images must be floats in [0, 1] (bright strokes on dark), "
                          f"got values in [{lo:g}, {hi:g}]")
    return pool


def _shape(x: torch.Tensor) -> str:
    return "x".join(str(s) for s in x.shape[1:])


def _check_data(labelled: LabelledImages, pool: UnlabelledPool, test: LabelledImages | None) -> None:
    if not isinstance(labelled, LabelledImages):
        raise ConfigError(f"labelled must be a LabelledImages, got {type(labelled).__name__}")
    if len(labelled) == 0:
        raise ConfigError("the labelled set is empty; self-training needs at least one labelled example")
    if pool.images.shape[1:] != labelled.images.shape[1:]:
        raise ConfigError(
            f"labelled images are {_shape(labelled.images)} but unlabelled images are {_shape(pool.images)}; "
            "load both at one size (e.g. load_omniglot(..., image_size=28) with the 28x28 sheets)"
        )
    if test is not None and test.images.shape[1:] != labelled.images.shape[1:]:
        raise ConfigError(f"labelled images are {_shape(labelled.images)} but test images are {_shape(test.images)}")


def split_labelled_unlabelled(
    data: LabelledImages, per_class: int, seed: int = 0
) -> tuple[LabelledImages, LabelledImages]:
    """Keep ``per_class`` random labelled examples per class; the rest become the unlabelled pool.

    The usual semi-supervised protocol (Lee 2013): the pool keeps its true labels only so that
    pseudo-label precision can be measured (:func:`make_pool` hides them from training).
    Deterministic by ``seed``.

    Raises:
        ConfigError: ``per_class < 1``.
        DatasetError: a class with no more than ``per_class`` examples (nothing left to pool).
    """
    _check_int("per_class", per_class)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.zeros(len(data), dtype=torch.bool)
    for cls in torch.unique(data.targets).tolist():
        members = torch.nonzero(data.targets == cls).flatten()
        if len(members) <= per_class:
            raise DatasetError(f"class {data.class_names[cls]!r} has {len(members)} examples; "
                               f"per_class={per_class} must leave at least one for the unlabelled pool")
        chosen[members[torch.randperm(len(members), generator=generator)[:per_class]]] = True
    return data.select(chosen), data.select(~chosen)


# --------------------------------------------------------------------------------------- teacher


class EMATeacher:
    """Mean teacher: an exponential moving average of the student's weights (Tarvainen & Valpola 2017).

    After every student step, ``teacher = d * teacher + (1 - d) * student`` with
    ``d = min(decay, 1 - 1 / (step + 1))`` (the paper's ramp, so an early teacher is not stuck at
    its initial weights). Buffers (BatchNorm running statistics) are copied from the student;
    they belong to the student's weights, not the averaged ones, so before the teacher labels or
    is evaluated, :meth:`recalibrate` recomputes them for its own weights on training images
    (``self_train`` and ``pseudo_label_online`` do this). Use it as the ``after_step`` hook of
    :func:`mtl.training.train_classifier`; ``model`` is the averaged network.
    """

    def __init__(self, student: nn.Module, decay: float = 0.99) -> None:
        if not 0 < decay < 1:
            raise ConfigError(f"ema_decay must be in (0, 1) (e.g. 0.99), got {decay!r}")
        self.decay = float(decay)
        self.model = copy.deepcopy(student)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.steps = 0

    @torch.no_grad()
    def __call__(self, student: nn.Module, step: int | None = None) -> None:
        """Fold the student's current weights into the average (the ``after_step`` hook)."""
        self.steps += 1
        d = min(self.decay, 1.0 - 1.0 / (self.steps + 1))
        for t, s in zip(self.model.parameters(), student.parameters()):
            t.mul_(d).add_(s.detach(), alpha=1.0 - d)
        for t, s in zip(self.model.buffers(), student.buffers()):
            t.copy_(s)

    @torch.no_grad()
    def recalibrate(self, images: torch.Tensor, batch_size: int = 256) -> None:
        """Recompute the teacher's BatchNorm running statistics on ``images`` (a plain average over batches).

        A no-op for a model without BatchNorm running statistics.
        """
        norms = [m for m in self.model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not norms or len(images) == 0:
            return
        device = next(self.model.parameters()).device
        momenta = [m.momentum for m in norms]
        was_training = self.model.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.model.train()
        try:
            for i in range(0, len(images), batch_size):
                self.model(images[i:i + batch_size].to(device))
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            self.model.train(was_training)


# --------------------------------------------------------------------------------- configs/result


@dataclass
class SelfTrainConfig:
    """Options of the round-based self-training loop (Scudder 1965; Yarowsky 1995; Lee 2013).

    Attributes:
        rounds: pseudo-labelling rounds after the supervised round 0.
        threshold: keep predictions with confidence ``>= threshold`` (in ``(0, 1]``), or ``None``.
        k_per_class: keep at most this many new pseudo-labels per predicted class per round
            (class-balanced top-k), or ``None``. At least one of the two must be set.
        labels: ``"hard"`` (arg-max class) or ``"soft"`` (the teacher's probabilities).
        reinit: a fresh student each round (``True``) or keep training the same one.
        ema_decay: label with a mean teacher of this decay (Tarvainen & Valpola 2017), or ``None``
            to label with the student itself.
        pseudo_weight: loss weight of pseudo-labelled examples (labelled ones weigh 1).
        epochs, batch_size, lr, optimizer, weight_decay: training of every round.
        steps: if set, every round trains for exactly this many optimizer steps instead of
            ``epochs`` passes, so rounds with more pseudo-labels get no extra compute and the
            supervised round 0 is trained as long as the others (a fair baseline).
        shift: random translation of training images by up to this many pixels (0: none).
        seed: seeds initialisation, shuffling and shifts.
        precision: ``"bf16"`` trains under bfloat16 autocast (:mod:`mtl.utils.precision`);
            pseudo-labelling, losses and tests stay float32.
        progress: show progress bars.
    """

    rounds: int = 5
    threshold: float | None = 0.9
    k_per_class: int | None = None
    labels: str = "hard"
    reinit: bool = True
    ema_decay: float | None = None
    pseudo_weight: float = 1.0
    epochs: int = 10
    steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    shift: int = 0
    seed: int = 0
    precision: str = "fp32"
    progress: bool = False

    def __post_init__(self) -> None:
        _check_int("rounds", self.rounds)
        if self.steps is not None:
            _check_int("steps", self.steps)
        _check_common(self)
        if not (isinstance(self.pseudo_weight, (int, float)) and self.pseudo_weight > 0
                and math.isfinite(self.pseudo_weight)):
            raise ConfigError(f"pseudo_weight must be a finite number > 0, got {self.pseudo_weight!r}")


@dataclass
class OnlineConfig:
    """Options of online pseudo-labelling (Lee 2013): a masked unlabelled loss in every step.

    Attributes:
        epochs: passes over the unlabelled pool; each step pairs ``unlabelled_batch_size`` pool
            images with ``batch_size`` labelled ones.
        threshold, k_per_class: the confidence mask, applied per unlabelled batch with
            :func:`select_pseudo_labels`. Lee's unmasked original is any threshold
            ``<= 1 / num_classes`` (every arg-max passes).
        labels: ``"hard"`` (Lee 2013) or ``"soft"``.
        alpha_final, ramp_start, ramp_end: the weight schedule of :func:`lee_alpha` (epochs).
        ema_decay: pseudo-label with a mean teacher (Tarvainen & Valpola 2017) instead of the
            student's own detached predictions.
        lr, optimizer, weight_decay, shift, seed, precision, progress: as in :class:`SelfTrainConfig`.
    """

    epochs: int = 10
    threshold: float | None = 0.95
    k_per_class: int | None = None
    labels: str = "hard"
    alpha_final: float = 3.0
    ramp_start: int = 1
    ramp_end: int = 5
    ema_decay: float | None = None
    batch_size: int = 64
    unlabelled_batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    shift: int = 0
    seed: int = 0
    precision: str = "fp32"
    progress: bool = False

    def __post_init__(self) -> None:
        _check_common(self)
        _check_int("unlabelled_batch_size", self.unlabelled_batch_size)
        _check_int("ramp_start", self.ramp_start, minimum=0)
        _check_int("ramp_end", self.ramp_end, minimum=0)
        if self.ramp_end < self.ramp_start:
            raise ConfigError(f"ramp_end ({self.ramp_end}) must be >= ramp_start ({self.ramp_start})")
        if not (isinstance(self.alpha_final, (int, float)) and self.alpha_final >= 0
                and math.isfinite(self.alpha_final)):
            raise ConfigError(f"alpha_final must be a finite number >= 0, got {self.alpha_final!r}")


@dataclass
class RoundStats:
    """What one round (or, online, one epoch) did; precision is measured where true classes are known.

    ``precision_added`` is the fraction of this round's new pseudo-labels that are correct,
    ``precision`` that of all pseudo-labels in use; ``accuracy`` is the test accuracy of the
    labelling model (the EMA teacher when there is one), ``student_accuracy`` the student's when
    it is a different model (``None`` otherwise).
    """

    round: int
    train_size: int
    steps: int
    added: int
    pseudo_labelled: int
    pool_left: int | None
    precision_added: float | None
    precision: float | None
    accuracy: float | None
    student_accuracy: float | None
    pool_accuracy: float | None
    train_loss: float | None
    alpha: float | None
    seconds: float


@dataclass
class SelfTrainResult:
    """Per-round statistics, why the loop stopped and the final labelling model (Yarowsky 1995; Lee 2013).

    ``selections[i]`` are the pool positions pseudo-labelled in round (online: epoch) ``i + 1``
    and ``pseudo_labels[i]`` the classes given to them.
    """

    method: str
    rounds: list[RoundStats]
    stop_reason: str
    model: nn.Module
    selections: list[torch.Tensor] = field(default_factory=list)
    pseudo_labels: list[torch.Tensor] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no model, no selected positions)."""
        accs = [r.accuracy for r in self.rounds]
        return {
            "method": self.method,
            "config": self.config,
            "stop_reason": self.stop_reason,
            "supervised_accuracy": accs[0] if accs else None,
            "final_accuracy": accs[-1] if accs else None,
            "rounds": [asdict(r) for r in self.rounds],
        }


# ------------------------------------------------------------------------------------ the loops

ROUNDS_FORMAT = "mtlmeta-selftrain-rounds-1"
ONLINE_FORMAT = "mtlmeta-selftrain-online-1"


def _identity(cfg: SelfTrainConfig | OnlineConfig, labelled: LabelledImages, pool: UnlabelledPool,
              model: ModelSpec, backbone_kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the options and a fingerprint of the data."""
    record = asdict(cfg)
    record.pop("progress", None)
    if record.get("precision") == "fp32":  # the identity of runs made before the option
        record.pop("precision")
    return {
        "config": record,
        "model": model if isinstance(model, str) else getattr(model, "__qualname__", type(model).__name__),
        "backbone_kwargs": json.loads(json.dumps(backbone_kwargs, default=str)),
        "labelled": [len(labelled), labelled.num_classes, list(labelled.image_shape)],
        "labelled_sum": float(labelled.images.double().sum()),
        "labels_sum": int(labelled.targets.sum()),
        "pool": [len(pool), float(pool.images.double().sum())],
    }


def _load_run(path: str | Path, fmt: str, identity: dict[str, Any], device: torch.device,
              fallback: bool = False) -> dict[str, Any]:
    """Load and check a self-training checkpoint (format, options and data must match)."""
    state, path = load_checkpoint_or_previous(path, map_location="cpu", fallback=fallback,
                                              warn=lambda m: print(f"warning: {m}", flush=True))
    if state.get("format") != fmt:
        kind = "round-based" if fmt == ROUNDS_FORMAT else "online"
        raise CheckpointError(f"checkpoint {str(path)!r} is not a {kind} self-training checkpoint")
    theirs = state.get("identity", {})
    diffs = []
    for key in sorted(set(identity) | set(theirs)):
        mine, other = identity.get(key), theirs.get(key)
        if isinstance(mine, dict) and isinstance(other, dict):
            diffs += config_differences(mine, other, prefix=f"{key}.")
        elif mine != other:
            diffs.append(f"{key}: checkpoint {other!r} vs now {mine!r}")
    if diffs:
        raise CheckpointError(f"cannot resume from {str(path)!r}: its configuration or data differ "
                              f"({'; '.join(diffs[:4])})")
    return state


def _stats_from(rows: list[dict[str, Any]]) -> list[RoundStats]:
    return [RoundStats(**r) for r in rows]


def _build(model: ModelSpec, backbone_kwargs: dict[str, Any], num_classes: int, seed: int,
           device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    if isinstance(model, str):
        net = create_backbone(model, num_classes=num_classes, **backbone_kwargs)
    elif callable(model):
        net = model()
        if not isinstance(net, nn.Module):
            raise ConfigError(f"the model factory must return an nn.Module, got {type(net).__name__}")
    else:
        raise ConfigError(f"model must be a registry backbone name or a factory, got {type(model).__name__}")
    return net.to(device)


def _accuracy(model: nn.Module, data: LabelledImages | None, device: torch.device) -> float | None:
    if data is None or len(data) == 0:
        return None
    logits = predict_logits(model, data.images, device=device)
    return float((logits.argmax(1) == data.targets).float().mean())


def _precision(predicted: torch.Tensor, truth: torch.Tensor) -> float | None:
    known = truth >= 0
    if not bool(known.any()):
        return None
    return float((predicted[known] == truth[known]).float().mean())


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)


def self_train(
    model: ModelSpec,
    labelled: LabelledImages,
    unlabelled: PoolSource | Sequence[PoolSource] | UnlabelledPool,
    config: SelfTrainConfig | None = None,
    *,
    backbone_kwargs: dict[str, Any] | None = None,
    test: LabelledImages | None = None,
    budget: Budget | None = None,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = print,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> SelfTrainResult:
    """Round-based self-training (Scudder 1965; Yarowsky 1995) with pseudo-labels (Lee 2013).

    Round 0 trains on ``labelled`` only (the supervised baseline). Each later round predicts the
    examples still in the pool with the teacher (the student, or its EMA, Tarvainen & Valpola
    2017), keeps the confident ones (:func:`select_pseudo_labels`), moves them with their
    pseudo-labels into the training set, and trains the student again (re-initialised or
    continued). An example is pseudo-labelled at most once. The loop ends after
    ``config.rounds`` rounds, when a selection comes back empty (with a message to ``log``), or
    when the pool is used up.

    Args:
        model: a registry backbone name (built with ``num_classes`` and ``backbone_kwargs``) or a
            factory returning a fresh classifier.
        labelled: the labelled training set.
        unlabelled: pool images (see :func:`make_pool`), or a ready :class:`UnlabelledPool`.
        config: the options (default :class:`SelfTrainConfig`).
        test: optional test set; its accuracy is recorded every round.
        budget: a step or time limit for each training call (each round), restarted per call.
        device: where to train.
        log: receives one line per round and the stop message (``None``: silent).
        checkpoint: write the loop's state here after every round (atomically, checksummed).
        resume: continue from ``checkpoint`` (same options and data) instead of starting anew.

    Raises:
        ConfigError: bad options, an empty labelled set or pool, or mismatched image shapes.
        CheckpointError: ``resume`` with a missing, corrupted or foreign checkpoint.
    """
    cfg = config or SelfTrainConfig()
    if not isinstance(cfg, SelfTrainConfig):
        raise ConfigError(f"config must be a SelfTrainConfig, got {type(cfg).__name__}")
    if resume and checkpoint is None:
        raise ConfigError("resume=True needs checkpoint=PATH (the file to continue from)")
    pool = unlabelled if isinstance(unlabelled, UnlabelledPool) else make_pool(unlabelled)
    _check_data(labelled, pool, test)
    say = log or (lambda _msg: None)
    device = torch.device(device)
    kwargs = dict(backbone_kwargs or {})
    num_classes = labelled.num_classes

    in_pool = torch.ones(len(pool), dtype=torch.bool)
    chosen = torch.empty(0, dtype=torch.long)  # pool positions in use, in the order added
    hard = torch.empty(0, dtype=torch.long)
    soft = torch.empty(0, num_classes)
    shift_gen = torch.Generator().manual_seed(cfg.seed + 1)
    result = SelfTrainResult("rounds", [], "", nn.Identity(), config=asdict(cfg))
    student: nn.Module | None = None
    teacher_ema: EMATeacher | None = None
    stop = f"completed {cfg.rounds} rounds"
    stopped = False
    pending = (torch.empty(0, dtype=torch.long), torch.empty(0, num_classes))  # next round's selection
    identity = _identity(cfg, labelled, pool, model, kwargs)
    first_round = 0
    if resume:
        state = _load_run(checkpoint, ROUNDS_FORMAT, identity, device)  # type: ignore[arg-type]
        in_pool, chosen, hard, soft = state["in_pool"], state["chosen"], state["hard"], state["soft"]
        pending = (state["pending"], state["pending_probs"])
        shift_gen.set_state(state["shift_gen"])
        torch.set_rng_state(state["rng"])
        result.rounds = _stats_from(state["rounds"])
        result.selections, result.pseudo_labels = list(state["selections"]), list(state["pseudo_labels"])
        stop, stopped = state["stop"], state["stopped"]
        student = _build(model, kwargs, num_classes, cfg.seed * 1000 + state["round"], device)
        student.load_state_dict(state["student"])
        torch.set_rng_state(state["rng"])  # _build reseeds the global generator
        if cfg.ema_decay is not None:
            teacher_ema = EMATeacher(student, cfg.ema_decay)
            teacher_ema.model.load_state_dict(state["teacher"])
            teacher_ema.steps = int(state["teacher_steps"])
        first_round = int(state["round"]) + 1
        say(f"resumed from {checkpoint} after round {state['round']}")

    for rnd in range(first_round, cfg.rounds + 1):
        if stopped:
            break
        start = time.perf_counter()
        added = torch.empty(0, dtype=torch.long)
        if rnd > 0:
            added, added_probs = pending
            if len(added) == 0:
                stop = (f"round {rnd}: no unlabelled example passed the selection (threshold={cfg.threshold}, "
                        f"k_per_class={cfg.k_per_class}; {int(in_pool.sum())} left in the pool); "
                        f"stopping after {rnd - 1} round(s)")
                say(stop)
                break
            in_pool[added] = False
            chosen = torch.cat([chosen, added])
            hard = torch.cat([hard, added_probs.argmax(1)])
            soft = torch.cat([soft, added_probs])
            result.selections.append(added)
            result.pseudo_labels.append(hard[len(hard) - len(added):])

        if student is None or cfg.reinit:
            student = _build(model, kwargs, num_classes, cfg.seed * 1000 + rnd, device)
            teacher_ema = EMATeacher(student, cfg.ema_decay) if cfg.ema_decay is not None else None
        images = torch.cat([labelled.images, pool.images[chosen]])
        targets = torch.cat([labelled.targets, hard])
        n_lab = len(labelled)
        weights = torch.cat([torch.ones(n_lab), torch.full((len(chosen),), float(cfg.pseudo_weight))]).to(device)
        soft_targets = None
        if cfg.labels == "soft":
            soft_targets = torch.cat([F.one_hot(labelled.targets, num_classes).float(), soft]).to(device)
        train_set = LabelledImages(images, targets, labelled.class_names)

        def batch_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                       soft_targets: torch.Tensor | None = soft_targets,
                       weights: torch.Tensor = weights) -> torch.Tensor:
            logits = net(random_shift(x, cfg.shift, shift_gen))
            per = _soft_ce(logits, soft_targets[index]) if soft_targets is not None else \
                F.cross_entropy(logits, y, reduction="none")
            return (weights[index] * per).mean()

        epochs, round_budget = cfg.epochs, budget
        if cfg.steps is not None:
            epochs = math.ceil(cfg.steps / math.ceil(len(train_set) / cfg.batch_size))
            round_budget = Budget(seconds=budget.seconds if budget else None, iterations=cfg.steps,
                                  clock=getattr(budget, "clock", "wall"))
        history = train_classifier(
            student, train_set, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
            weight_decay=cfg.weight_decay, batch_loss=batch_loss, after_step=teacher_ema, seed=cfg.seed * 1000 + rnd,
            budget=round_budget, device=device, progress=cfg.progress, desc=f"round {rnd}",
            precision=cfg.precision,
        )
        if teacher_ema is not None:
            teacher_ema.recalibrate(train_set.images)
        labeller = teacher_ema.model if teacher_ema is not None else student
        truth = pool.targets[chosen]
        pool_acc = None
        if pool.has_truth or rnd < cfg.rounds:
            pool_logits = predict_logits(labeller, pool.images, device=device)
            pool_acc = _precision(pool_logits.argmax(1), pool.targets) if pool.has_truth else None
        stats = RoundStats(
            round=rnd, train_size=len(train_set), steps=history.steps, added=len(added), pseudo_labelled=len(chosen),
            pool_left=int(in_pool.sum()),
            precision_added=_precision(hard[len(hard) - len(added):], truth[len(truth) - len(added):])
            if len(added) else None,
            precision=_precision(hard, truth) if len(chosen) else None,
            accuracy=_accuracy(labeller, test, device),
            student_accuracy=_accuracy(student, test, device) if labeller is not student else None,
            pool_accuracy=pool_acc, train_loss=history.train_loss[-1], alpha=None,
            seconds=time.perf_counter() - start,
        )
        result.rounds.append(stats)
        say(_round_line(stats))
        if rnd < cfg.rounds and not bool(in_pool.any()):
            stop = f"the unlabelled pool is used up after round {rnd}; stopping"
            say(stop)
            stopped = True
        elif rnd < cfg.rounds:  # the labelling model at the end of this round picks the next round's labels
            probs = torch.softmax(pool_logits.float(), dim=1)
            nxt = select_pseudo_labels(probs, cfg.threshold, cfg.k_per_class, candidates=in_pool)
            pending = (nxt, probs[nxt])
        if checkpoint is not None:
            save_checkpoint(checkpoint, {
                "format": ROUNDS_FORMAT, "identity": identity, "round": rnd, "in_pool": in_pool,
                "chosen": chosen, "hard": hard, "soft": soft, "pending": pending[0], "pending_probs": pending[1],
                "shift_gen": shift_gen.get_state(), "rng": torch.get_rng_state(),
                "rounds": [asdict(r) for r in result.rounds], "selections": result.selections,
                "pseudo_labels": result.pseudo_labels, "stop": stop, "stopped": stopped,
                "student": student.state_dict(),
                "teacher": teacher_ema.model.state_dict() if teacher_ema is not None else None,
                "teacher_steps": teacher_ema.steps if teacher_ema is not None else 0,
            }, keep_previous=True)
    result.stop_reason = stop
    assert student is not None
    result.model = teacher_ema.model if teacher_ema is not None else student
    return result


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _round_line(s: RoundStats) -> str:
    what = "epoch" if s.alpha is not None else "round"
    return (f"{what} {s.round}: +{s.added} pseudo-labels (precision {_fmt(s.precision_added)}), "
            f"{s.pseudo_labelled} in use (precision {_fmt(s.precision)}), test accuracy {_fmt(s.accuracy)}")


def pseudo_label_online(
    model: ModelSpec,
    labelled: LabelledImages,
    unlabelled: PoolSource | Sequence[PoolSource] | UnlabelledPool,
    config: OnlineConfig | None = None,
    *,
    backbone_kwargs: dict[str, Any] | None = None,
    test: LabelledImages | None = None,
    budget: Budget | None = None,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = print,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> SelfTrainResult:
    """Online pseudo-labelling (Lee 2013): every step adds a confidence-masked loss on an unlabelled batch.

    The loss of a step is ``CE(labelled batch) + alpha(t) * sum_selected CE(pseudo-label) / B_u``,
    where the pseudo-labels are the current model's own detached predictions on the unlabelled
    batch (or an EMA teacher's, Tarvainen & Valpola 2017), selected by
    :func:`select_pseudo_labels` (the same code as :func:`self_train`, applied per batch) and
    ``alpha(t)`` is :func:`lee_alpha`. An epoch is one pass over the pool; its statistics
    (``added``: pool examples that passed the mask, their precision where known) form one
    :class:`RoundStats` row, ``round`` being the epoch (1-based) and round 0 the untrained model.

    Arguments as in :func:`self_train` (``budget`` limits each epoch; ``checkpoint`` is written
    after every epoch).
    """
    cfg = config or OnlineConfig()
    if not isinstance(cfg, OnlineConfig):
        raise ConfigError(f"config must be an OnlineConfig, got {type(cfg).__name__}")
    if resume and checkpoint is None:
        raise ConfigError("resume=True needs checkpoint=PATH (the file to continue from)")
    pool = unlabelled if isinstance(unlabelled, UnlabelledPool) else make_pool(unlabelled)
    _check_data(labelled, pool, test)
    say = log or (lambda _msg: None)
    device = torch.device(device)
    num_classes = labelled.num_classes
    kwargs = dict(backbone_kwargs or {})
    student = _build(model, kwargs, num_classes, cfg.seed * 1000, device)
    teacher = EMATeacher(student, cfg.ema_decay) if cfg.ema_decay is not None else None
    trainable = [p for p in student.parameters() if p.requires_grad]
    opt = make_optimizer(trainable, cfg.optimizer, cfg.lr, cfg.weight_decay)
    # The pool is the data that train_classifier iterates over; its true classes (or 0 where
    # unknown) ride along as ``y`` for the precision count only.
    pool_set = LabelledImages(pool.images, pool.targets.clamp(min=0), labelled.class_names
                              if int(pool.targets.max()) < num_classes else None)
    lab_gen = torch.Generator().manual_seed(cfg.seed + 2)
    shift_gen = torch.Generator().manual_seed(cfg.seed + 1)
    lab_order: list[torch.Tensor] = []
    result = SelfTrainResult("online", [], f"completed {cfg.epochs} epochs", student, config=asdict(cfg))
    result.rounds.append(RoundStats(0, len(labelled), 0, 0, 0, None, None, None, _accuracy(student, test, device),
                                    None, None, None, 0.0, 0.0))

    def next_labelled() -> torch.Tensor:
        if not lab_order or len(lab_order[0]) == 0:
            lab_order[:] = [torch.randperm(len(labelled), generator=lab_gen)]
        batch, lab_order[0] = lab_order[0][:cfg.batch_size], lab_order[0][cfg.batch_size:]
        return batch

    identity = _identity(cfg, labelled, pool, model, kwargs)
    first_epoch = 0
    if resume:
        state = _load_run(checkpoint, ONLINE_FORMAT, identity, device)  # type: ignore[arg-type]
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        if teacher is not None:
            teacher.model.load_state_dict(state["teacher"])
            teacher.steps = int(state["teacher_steps"])
        lab_gen.set_state(state["lab_gen"])
        shift_gen.set_state(state["shift_gen"])
        lab_order[:] = [state["lab_order"]] if state["lab_order"] is not None else []
        torch.set_rng_state(state["rng"])
        result.rounds = _stats_from(state["rounds"])
        result.selections, result.pseudo_labels = list(state["selections"]), list(state["pseudo_labels"])
        first_epoch = int(state["epoch"]) + 1
        say(f"resumed from {checkpoint} after epoch {first_epoch}")

    for epoch in range(first_epoch, cfg.epochs):
        start = time.perf_counter()
        alpha = lee_alpha(epoch, cfg.alpha_final, cfg.ramp_start, cfg.ramp_end)
        hits = {"selected": [], "labels": []}

        def batch_loss(net: nn.Module, xu: torch.Tensor, _y: torch.Tensor, index: torch.Tensor,
                       alpha: float = alpha, hits: dict = hits) -> torch.Tensor:
            li = next_labelled()
            xl, yl = labelled.images[li].to(xu.device), labelled.targets[li].to(xu.device)
            logits = net(random_shift(torch.cat([xl, xu]), cfg.shift, shift_gen))
            sup = F.cross_entropy(logits[:len(xl)], yl)
            lu = logits[len(xl):]
            if teacher is not None:
                probs = torch.softmax(predict_logits(teacher.model, xu, device=xu.device).to(xu.device), dim=1)
            else:
                probs = torch.softmax(lu.detach(), dim=1)
            sel = select_pseudo_labels(probs, cfg.threshold, cfg.k_per_class)
            hits["selected"].append(index[sel].cpu())
            hits["labels"].append(probs[sel].argmax(1).cpu())
            if alpha == 0 or len(sel) == 0:
                return sup
            target = probs[sel]
            per = _soft_ce(lu[sel], target) if cfg.labels == "soft" else F.cross_entropy(
                lu[sel], target.argmax(1), reduction="none")
            return sup + alpha * per.sum() / len(xu)

        history = train_classifier(
            student, pool_set, epochs=1, batch_size=cfg.unlabelled_batch_size, optimizer=opt,
            batch_loss=batch_loss, after_step=teacher, seed=cfg.seed * 1000 + epoch, budget=budget, device=device,
            progress=cfg.progress, desc=f"epoch {epoch + 1}", precision=cfg.precision,
        )
        selected = torch.cat(hits["selected"]) if hits["selected"] else torch.empty(0, dtype=torch.long)
        labels = torch.cat(hits["labels"]) if hits["labels"] else torch.empty(0, dtype=torch.long)
        result.selections.append(selected)
        result.pseudo_labels.append(labels)
        precision = _precision(labels, pool.targets[selected]) if len(selected) else None
        if teacher is not None:  # statistics for the averaged weights; the next epoch's steps copy them again
            teacher.recalibrate(torch.cat([labelled.images, pool.images]))
        labeller = teacher.model if teacher is not None else student
        stats = RoundStats(
            round=epoch + 1, train_size=len(labelled) + len(pool), steps=history.steps, added=len(selected),
            pseudo_labelled=len(selected), pool_left=None, precision_added=precision, precision=precision,
            accuracy=_accuracy(labeller, test, device),
            student_accuracy=_accuracy(student, test, device) if labeller is not student else None,
            pool_accuracy=_precision(predict_logits(labeller, pool.images, device=device).argmax(1), pool.targets)
            if pool.has_truth else None,
            train_loss=history.train_loss[-1], alpha=alpha, seconds=time.perf_counter() - start,
        )
        result.rounds.append(stats)
        say(_round_line(stats))
        if checkpoint is not None:
            save_checkpoint(checkpoint, {
                "format": ONLINE_FORMAT, "identity": identity, "epoch": epoch, "student": student.state_dict(),
                "optimizer": opt.state_dict(),
                "teacher": teacher.model.state_dict() if teacher is not None else None,
                "teacher_steps": teacher.steps if teacher is not None else 0,
                "lab_gen": lab_gen.get_state(), "shift_gen": shift_gen.get_state(),
                "lab_order": lab_order[0] if lab_order else None, "rng": torch.get_rng_state(),
                "rounds": [asdict(r) for r in result.rounds], "selections": result.selections,
                "pseudo_labels": result.pseudo_labels,
            }, keep_previous=True)
    result.model = teacher.model if teacher is not None else student
    return result
