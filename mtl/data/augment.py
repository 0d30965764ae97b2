"""Cheap image augmentations with an explicit random generator (reproducible by seed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtl.errors import ConfigError

__all__ = ["random_shift"]


def random_shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of ``x`` ``[B, C, H, W]`` by its own random offset in ``[-pixels, pixels]``
    along both axes, filling the uncovered border with zeros.

    Small random translations are the standard augmentation of handwritten characters (Simard,
    Steinkraus & Platt 2003); Noisy Student uses such input noise on the student (Xie et al.
    2020). Offsets are drawn on ``generator`` (CPU): all row offsets first, then all column offsets.
    """
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 0:
        raise ConfigError(f"pixels must be an integer >= 0, got {pixels!r}")
    if x.dim() != 4:
        raise ConfigError(f"x must be a batch of images [B, C, H, W], got shape {tuple(x.shape)}")
    if pixels == 0:
        return x
    b, _, h, w = x.shape
    dy = torch.randint(0, 2 * pixels + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pixels + 1, (b,), generator=generator).to(x.device)
    padded = F.pad(x, (pixels, pixels, pixels, pixels))
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, :, None]  # [B, H, 1]
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, :]  # [B, 1, W]
    out = padded[torch.arange(b, device=x.device)[:, None, None], :, rows, cols]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()
