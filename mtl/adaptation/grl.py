"""The gradient reversal layer and Ganin's adaptation-factor schedule (Ganin and Lempitsky 2015).

In "Unsupervised Domain Adaptation by Backpropagation" (ICML 2015) a domain classifier sits on
the features behind a layer that is the identity in the forward pass and multiplies the gradient
by ``-lambda`` in the backward pass, so one backward step trains the domain classifier to tell
the domains apart and the feature extractor to make them indistinguishable. ``lambda`` grows
from 0 to 1 over training as ``lambda_p = 2 / (1 + exp(-gamma p)) - 1`` (``gamma = 10``), which
keeps the noisy early domain signal from disturbing the features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mtl.errors import ConfigError

__all__ = ["GradientReversal", "ganin_lambda", "grad_reverse"]


def ganin_lambda(progress: float, gamma: float = 10.0) -> float:
    """Ganin and Lempitsky's schedule ``lambda_p = 2 / (1 + exp(-gamma p)) - 1`` for ``p`` in ``[0, 1]``.

    ``lambda_0 = 0`` and ``lambda_1`` is just below 1 (0.9999 for ``gamma = 10``).
    """
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0.0 <= progress <= 1.0:
        raise ConfigError(f"progress must be a number in [0, 1], got {progress!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (gamma >= 0 and math.isfinite(gamma)):
        raise ConfigError(f"gamma must be a finite number >= 0, got {gamma!r}")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: ANN001
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-scale`` going back (Ganin and Lempitsky 2015)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ConfigError(f"gradient reversal scale must be a finite number, got {scale!r}")
    return _ReverseGrad.apply(x, float(scale))


class GradientReversal(nn.Module):
    """The gradient reversal layer of DANN (Ganin and Lempitsky 2015) as a module.

    ``forward(x)`` returns ``x`` unchanged; the gradient flowing back is multiplied by
    ``-scale``. Set ``scale`` directly, or call :meth:`set_progress` with the training progress
    ``p`` in ``[0, 1]`` to follow :func:`ganin_lambda` with this layer's ``gamma``.
    """

    def __init__(self, scale: float = 1.0, gamma: float = 10.0) -> None:
        super().__init__()
        ganin_lambda(0.0, gamma)  # validates gamma
        self.gamma = float(gamma)
        self.scale = float(scale)

    def set_progress(self, progress: float) -> float:
        """Set ``scale`` to ``ganin_lambda(progress, gamma)`` and return it."""
        self.scale = ganin_lambda(progress, self.gamma)
        return self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` unchanged (the reversal acts on the gradient only)."""
        return grad_reverse(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}, gamma={self.gamma:g}"
