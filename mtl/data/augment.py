"""Cheap image augmentations with an explicit random generator (reproducible by seed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtl.errors import ConfigError

__all__ = ["AFFINE_LIMITS", "random_affine", "random_shift", "rotate"]

AFFINE_LIMITS = {"degrees": 180.0, "scale": 0.9, "shear": 60.0}  # largest accepted random_affine ranges


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


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    degrees: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
) -> torch.Tensor:
    """Distort each image of ``x`` ``[B, C, H, W]`` by its own random affine map about the centre.

    Per image: a rotation by an angle in ``[-degrees, degrees]``, independent horizontal and
    vertical scalings by factors in ``[1 - scale, 1 + scale]`` and a horizontal shear by an angle in
    ``[-shear, shear]`` (degrees), resampled bilinearly; pixels from outside the image are 0.
    Small affine distortions imitate how different people draw the same character (Simard,
    Steinkraus & Platt 2003 used them, with elastic ones, on handwritten digits).
    Parameters are drawn on ``generator`` (CPU) in this order: angles, x scales, y scales, shears.
    """
    for name, value in (("degrees", degrees), ("scale", scale), ("shear", shear)):
        high = AFFINE_LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= high):
            raise ConfigError(f"{name} must be a number in [0, {high:g}], got {value!r}")
    if x.dim() != 4:
        raise ConfigError(f"x must be a batch of images [B, C, H, W], got shape {tuple(x.shape)}")
    if degrees == 0 and scale == 0 and shear == 0:
        return x
    b = x.shape[0]

    def uniform(half_width: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1) * half_width

    angle = torch.deg2rad(uniform(degrees))
    sx, sy = 1 + uniform(scale), 1 + uniform(scale)
    tan_shear = torch.tan(torch.deg2rad(uniform(shear)))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward map (image -> distorted image) = rotation @ shear @ scaling
    forward = torch.stack([
        torch.stack([cos * sx, (cos * tan_shear - sin) * sy], -1),
        torch.stack([sin * sx, (sin * tan_shear + cos) * sy], -1),
    ], -2)
    return _warp(x, forward)


def _warp(x: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Resample each image of ``x`` under its ``forward`` 2x2 map about the centre (float64 ``[B, 2, 2]``)."""
    # affine_grid wants, for each output pixel, where to read in the input: the inverse map
    theta = torch.cat([torch.linalg.inv(forward), torch.zeros(x.shape[0], 2, 1, dtype=torch.float64)], -1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Every image of ``x`` ``[B, C, H, W]`` rotated by ``degrees`` about its centre (clockwise as
    displayed, rows downwards), resampled bilinearly as in :func:`random_affine` (pixels from
    outside the image are 0)."""
    if x.dim() != 4:
        raise ConfigError(f"x must be a batch of images [B, C, H, W], got shape {tuple(x.shape)}")
    if degrees == 0:
        return x
    a = torch.deg2rad(torch.tensor(float(degrees), dtype=torch.float64))
    forward = torch.stack([torch.stack([a.cos(), -a.sin()]), torch.stack([a.sin(), a.cos()])])
    return _warp(x, forward.expand(x.shape[0], 2, 2))


def check_test_shift(pixels: object) -> int:
    """Return ``pixels``, raising :class:`ConfigError` unless it is an integer in 0..4 (``test_shift``)."""
    if isinstance(pixels, bool) or not isinstance(pixels, int) or not 0 <= pixels <= 4:
        raise ConfigError(f"test_shift must be an integer number of pixels in 0..4, got {pixels!r}")
    return pixels


def check_test_rotate(degrees: object) -> float:
    """``degrees`` as a float, raising :class:`ConfigError` unless it is a number in [0, 45] (``test_rotate``)."""
    if isinstance(degrees, bool) or not isinstance(degrees, (int, float)) or not 0 <= degrees <= 45:
        raise ConfigError(f"test_rotate must be a number of degrees in [0, 45], got {degrees!r}")
    return float(degrees)


def tta_views(x: torch.Tensor, shift: int = 0, degrees: float = 0.0) -> list[torch.Tensor]:
    """Copies of the image batch ``x`` for test-time augmentation: moved by every offset of up to
    ``shift`` pixels in x and y (circular shifts, which equal plain shifts for images with empty
    borders such as Omniglot's), each also rotated by ``-degrees`` and ``+degrees`` when
    ``degrees > 0`` (:func:`rotate`): ``(2 * shift + 1) ** 2`` views, times 3 with rotations.
    The first view is ``x`` itself (no shift, no rotation)."""
    shift, degrees = check_test_shift(shift), check_test_rotate(degrees)
    angles = (0.0, -degrees, degrees) if degrees > 0 else (0.0,)
    offsets = [(0, 0)] + [(dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)
                          if (dy, dx) != (0, 0)]
    views = []
    for angle in angles:
        turned = rotate(x, angle)
        views += [turned if (dy, dx) == (0, 0) else torch.roll(turned, (dy, dx), (-2, -1)) for dy, dx in offsets]
    return views
