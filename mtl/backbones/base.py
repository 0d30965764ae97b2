"""The :class:`Backbone` module every registry entry returns: a feature trunk plus an optional head."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mtl.errors import ConfigError


def batch_norm_2d(channels: int, track_running_stats: bool = True) -> nn.BatchNorm2d:
    """BatchNorm2d; ``track_running_stats=False`` uses batch statistics at train and test time.

    The latter is the MAML convention (Finn et al. 2017): every forward pass normalises with the
    statistics of the batch at hand, so no running buffers are kept or updated.
    """
    return nn.BatchNorm2d(channels, track_running_stats=track_running_stats)


class Backbone(nn.Module):
    """A feature extractor ``features`` with an optional linear ``head``.

    Parameter names are stable: the trunk's start with ``features.``, the head's with
    ``head.``, so layers can be frozen or restored by regular expression.

    Args:
        features: module mapping inputs ``[B, *input_shape]`` to ``[B, out_features]``.
        out_features: size of the feature vector.
        input_shape: the per-sample input shape the trunk was built for, or ``None`` when any
            spatial size is accepted (only the channel count is checked then).
        num_classes: add a ``Linear(out_features, num_classes)`` head when given.
        accepts_any_size: whether spatial sizes other than ``input_shape`` are accepted.
    """

    def __init__(
        self,
        features: nn.Module,
        out_features: int,
        input_shape: Sequence[int],
        num_classes: int | None = None,
        accepts_any_size: bool = False,
    ) -> None:
        super().__init__()
        self.features = features
        self.out_features = int(out_features)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.accepts_any_size = accepts_any_size
        self.head: nn.Module | None = None
        if num_classes is not None:
            self.reset_head(num_classes)

    @property
    def num_classes(self) -> int | None:
        """Outputs of the head, or ``None`` for a headless backbone."""
        return None if self.head is None else int(self.head.out_features)  # type: ignore[union-attr]

    def reset_head(self, num_classes: int | None) -> nn.Module | None:
        """Replace the head by a fresh ``Linear(out_features, num_classes)`` (``None`` removes it).

        The new head is placed on the device and dtype of the trunk; the trunk is untouched.
        """
        if num_classes is not None:
            if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
                raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
            ref = next(self.features.parameters(), None)
            head = nn.Linear(self.out_features, num_classes)
            if ref is not None:
                head = head.to(device=ref.device, dtype=ref.dtype)
            self.head = head
        else:
            self.head = None
        return self.head

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`ConfigError` when ``x`` (batched) does not fit the trunk."""
        shape = tuple(x.shape[1:])
        if len(self.input_shape) == 1:  # vector models flatten their input
            ok = math.prod(shape) == self.input_shape[0]
        elif self.accepts_any_size:
            ok = len(shape) == len(self.input_shape) and shape[:1] == self.input_shape[:1]
        else:
            ok = shape == self.input_shape
        if not ok:
            want = "x".join(map(str, self.input_shape))
            if self.accepts_any_size:
                want = f"{self.input_shape[0]} channels (any size)"
            raise ConfigError(
                f"{getattr(self, 'backbone_name', type(self).__name__)} expects inputs of "
                f"{want}, got {'x'.join(map(str, shape))}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vectors ``[B, out_features]`` (the trunk only)."""
        if tuple(x.shape[1:]) != self.input_shape:
            self.check_input(x)
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits when a head is attached, features otherwise."""
        feats = self.forward_features(x)
        return feats if self.head is None else self.head(feats)


def positive_int(name: str, value: object) -> int:
    """Validate that ``value`` is a positive ``int``; the error names the parameter."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value
