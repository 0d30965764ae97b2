"""Teachers for knowledge distillation: ensembles of classifiers and cached logits of a frozen teacher.

Hinton, Vinyals and Dean 2015 distil an ensemble into one network; :class:`EnsembleTeacher`
combines several classifiers into one. A frozen teacher gives the same outputs for a sample
every epoch, so :class:`CachedLogits` computes them once and looks them up by the sample's
position in the training set (the ``index`` that :func:`mtl.training.train_classifier` passes to
its ``batch_loss``): shuffling and augmentation of the student's batch cannot misalign them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtl.data.base import LabelledImages
from mtl.errors import ConfigError
from mtl.training import predict_logits

__all__ = ["COMBINE_MODES", "CachedLogits", "EnsembleTeacher", "agreement", "count_classes", "is_frozen"]

COMBINE_MODES = ("logits", "probs")
"""``logits``: mean of the members' logits (a normalised geometric mean of their distributions at
any temperature); ``probs``: log of the mean of their probabilities (the usual ensemble average)."""


def is_frozen(model: nn.Module) -> bool:
    """Whether no parameter of ``model`` requires a gradient (a frozen teacher)."""
    return not any(p.requires_grad for p in model.parameters())


@torch.no_grad()
def count_classes(model: nn.Module, example: torch.Tensor) -> int:
    """Number of outputs of a classifier: its ``num_classes`` when it says, else one eval-mode forward pass.

    ``example`` is one batched input ``[B, ...]`` (only its first sample is used).
    """
    known = getattr(model, "num_classes", None)
    if isinstance(known, int) and not isinstance(known, bool):
        return known
    device = next((p.device for p in model.parameters()), example.device)
    was_training = model.training
    model.eval()
    try:
        out = model(example[:1].to(device))
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ConfigError(f"a classifier must return logits [batch, classes], got "
                          f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return int(out.shape[1])


class EnsembleTeacher(nn.Module):
    """Several classifiers acting as one teacher (Hinton et al. 2015 distil an ensemble into one net).

    ``combine="logits"`` returns the weighted mean of the members' logits; ``combine="probs"``
    returns ``log(sum_i w_i softmax(z_i))``, whose softmax is the weighted mean of their
    probabilities (the prediction of a classic ensemble, e.g. the Born-Again Network ensemble of
    Furlanello et al. 2018). Members are used as they are (call ``.eval()`` on the ensemble to
    put all of them in eval mode).

    Args:
        members: the classifiers; they must predict the same number of classes.
        combine: one of :data:`COMBINE_MODES`.
        weights: non-negative member weights (normalised to sum 1); default equal.

    Raises:
        ConfigError: no member, a member that is not a module, an unknown ``combine``, bad
            weights, or members whose numbers of classes differ (at construction when they
            declare ``num_classes``, else at the first forward pass).
    """

    def __init__(self, members: Sequence[nn.Module], combine: str = "logits",
                 weights: Sequence[float] | None = None) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ConfigError("an ensemble teacher needs at least one member, got none")
        for i, m in enumerate(members):
            if not isinstance(m, nn.Module):
                raise ConfigError(f"ensemble member {i} must be an nn.Module, got {type(m).__name__}")
        if combine not in COMBINE_MODES:
            raise ConfigError(f"combine must be one of {', '.join(COMBINE_MODES)}, got {combine!r}")
        if weights is None:
            weights = [1.0] * len(members)
        weights = [float(w) for w in weights]
        if len(weights) != len(members) or any(not w >= 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"ensemble weights must be {len(members)} non-negative numbers with a positive sum, "
                              f"got {weights}")
        declared = {getattr(m, "num_classes", None) for m in members} - {None}
        if len(declared) > 1:
            raise ConfigError(f"ensemble members predict different numbers of classes: {sorted(declared)}")
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.register_buffer("weights", torch.tensor(weights) / sum(weights), persistent=False)

    @property
    def num_classes(self) -> int | None:
        """The members' number of classes when they declare it, else ``None``."""
        declared = [getattr(m, "num_classes", None) for m in self.members]
        return declared[0] if declared and all(d == declared[0] for d in declared) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Combined logits ``[B, C]`` of all members."""
        outs = [m(x) for m in self.members]
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) != 1:
            raise ConfigError(f"ensemble members return different output shapes: {sorted(shapes)}")
        stacked = torch.stack(outs)  # [M, B, C]
        w = self.weights.to(stacked.dtype).view(-1, 1, 1)
        if self.combine == "logits":
            return (w * stacked).sum(0)
        log_w = torch.log(w.clamp_min(torch.finfo(stacked.dtype).tiny))
        return torch.logsumexp(log_w + torch.log_softmax(stacked, dim=2), dim=0)


class CachedLogits:
    """A frozen teacher's logits for every sample of one training set, looked up by sample position.

    Built once with :meth:`from_teacher` (eval mode, no gradient, on the clean images), then
    ``cache[index]`` returns the rows for the sample positions ``index`` (the ``index`` that
    :func:`mtl.training.train_classifier` gives its ``batch_loss``), so the order of a shuffled
    batch and any augmentation of its images do not matter (Hinton et al. 2015 distil from a
    fixed teacher; the cache only saves its forward passes). A per-sample fingerprint of the
    images (their pixel sums) is kept; :meth:`check` refuses a training set whose samples are
    not the ones the cache was built on, in the same order.

    Args:
        logits: ``[N, C]`` teacher logits, row ``i`` for sample ``i``.
        fingerprint: ``[N]`` per-sample image sums (see :meth:`fingerprint_of`), or ``None``.
    """

    def __init__(self, logits: torch.Tensor, fingerprint: torch.Tensor | None = None) -> None:
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
            raise ConfigError(f"cached logits must be a float tensor [samples, classes], got "
                              f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
        if fingerprint is not None and fingerprint.shape != (logits.shape[0],):
            raise ConfigError(f"fingerprint must have shape [{logits.shape[0]}], got {tuple(fingerprint.shape)}")
        self.logits = logits.detach().float().cpu()
        self.fingerprint = None if fingerprint is None else fingerprint.detach().double().cpu()

    @staticmethod
    def fingerprint_of(images: torch.Tensor) -> torch.Tensor:
        """Per-sample sum of pixel values (float64): cheap, and changes when samples are reordered."""
        return images.detach().reshape(len(images), -1).double().sum(dim=1).cpu()

    @classmethod
    def from_teacher(cls, teacher: nn.Module, data: LabelledImages | torch.Tensor, batch_size: int = 512,
                     device: torch.device | str | None = None) -> CachedLogits:
        """Run ``teacher`` once over ``data`` (eval mode, no gradient) and keep its logits by sample position."""
        images = data.images if isinstance(data, LabelledImages) else data
        if not isinstance(images, torch.Tensor) or len(images) == 0:
            raise ConfigError("cannot cache teacher logits for an empty set of images")
        return cls(predict_logits(teacher, images, batch_size=batch_size, device=device), cls.fingerprint_of(images))

    @property
    def num_classes(self) -> int:
        """Number of classes (columns) of the cached logits."""
        return int(self.logits.shape[1])

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        """Logits of the samples at positions ``index`` (on the device of ``index``)."""
        return self.logits[index.cpu()].to(index.device)

    def check(self, data: LabelledImages) -> None:
        """Refuse ``data`` unless it has this cache's samples in this cache's order.

        Raises:
            ConfigError: a different number of samples, or (with a fingerprint) different images
                at some position, naming the first mismatching position.
        """
        if len(data) != len(self):
            raise ConfigError(f"the teacher logits were cached for {len(self)} samples but the training set has "
                              f"{len(data)}; cache them again for this set")
        if self.fingerprint is None:
            return
        now = self.fingerprint_of(data.images)
        bad = torch.nonzero(~torch.isclose(now, self.fingerprint, rtol=1e-6, atol=1e-6)).flatten()
        if len(bad):
            raise ConfigError(f"the training set does not match the cached teacher logits (first mismatch at "
                              f"sample {int(bad[0])}, {len(bad)} in all): was it reordered or changed after caching?")


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of samples on which two ``[N, C]`` logit tensors predict the same class (top-1 agreement)."""
    if a.shape != b.shape or a.dim() != 2:
        raise ConfigError(f"agreement needs two logit tensors of one shape [N, C], got {tuple(a.shape)} "
                          f"and {tuple(b.shape)}")
    return float((a.argmax(1) == b.argmax(1)).float().mean())
