"""Reproducible target domains: the same images under a generated domain shift.

Two shifts, both deterministic given ``seed`` (the same input and seed give the same output,
bit for bit, on the CPU):

- ``"mnistm"``: strokes blended over a random colour texture, in the manner of MNIST-M (Ganin and
  Lempitsky 2015, who blended MNIST digits over patches of BSDS500 photographs). No photographs
  are used here: every background is a procedural texture (a dark or bright base level per
  colour channel, smooth colour blobs, an oriented colour grating and pixel noise). As in MNIST-M
  the blend is the absolute difference ``|background - strokes|`` per channel, so strokes take
  the inverse colour of what lies beneath them. The output has 3 channels; :func:`source_domain`
  turns the grey source into 3 equal channels so both domains have the same input shape.
- ``"invert-elastic"``: contrast inversion (dark strokes on a bright background) after an
  elastic distortion (Simard, Steinkraus and Platt 2003: a random displacement field smoothed by
  a Gaussian of ``sigma`` pixels and scaled by ``alpha``). One channel, as the input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtl.data.base import LabelledImages
from mtl.errors import ConfigError

__all__ = ["SHIFTS", "make_target_domain", "source_domain"]

SHIFTS: tuple[str, ...] = ("mnistm", "invert-elastic")
"""Names accepted by :func:`make_target_domain`."""

_CHUNK = 1024


def _images_of(data: LabelledImages | torch.Tensor, name: str = "data") -> torch.Tensor:
    images = data.images if isinstance(data, LabelledImages) else data
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"{name} must be a LabelledImages or an [N, C, H, W] tensor, got {shape}")
    if len(images) == 0:
        raise ConfigError(f"{name} is empty")
    return images


def _rewrap(data: LabelledImages | torch.Tensor, images: torch.Tensor) -> LabelledImages | torch.Tensor:
    if isinstance(data, LabelledImages):
        return LabelledImages(images, data.targets.clone(), data.class_names,
                              {k: v.clone() for k, v in data.attributes.items()}, data.attribute_names)
    return images


def _check_shift(shift: str) -> None:
    if shift not in SHIFTS:
        raise ConfigError(f"shift must be one of {', '.join(SHIFTS)}, got {shift!r}")


def source_domain(data: LabelledImages | torch.Tensor, shift: str) -> LabelledImages | torch.Tensor:
    """The source images in the input shape of the ``shift``'s target domain.

    For ``"mnistm"`` a grey image becomes 3 equal channels (as MNIST is for MNIST-M); other
    shifts keep the images as they are (the same object is returned).
    """
    _check_shift(shift)
    images = _images_of(data)
    if shift != "mnistm" or images.shape[1] == 3:
        return data
    if images.shape[1] != 1:
        raise ConfigError(f"shift 'mnistm' needs grey (1-channel) or RGB images, got {images.shape[1]} channels")
    return _rewrap(data, images.expand(-1, 3, -1, -1).contiguous())


def _textures(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random colour textures ``[n, 3, h, w]`` in ``[0, 1]``.

    Each channel has a dark (0-0.25) or bright (0.75-1) base level, so that the absolute-difference
    blend keeps the strokes visible, plus smooth colour blobs, an oriented grating and pixel noise.
    """
    bright = torch.rand(n, 3, 1, 1, generator=gen) < 0.5
    level = 0.25 * torch.rand(n, 3, 1, 1, generator=gen)
    base = torch.where(bright, 1.0 - level, level)
    blobs = 0.2 * F.interpolate(torch.rand(n, 3, 4, 4, generator=gen) - 0.5, size=(h, w), mode="bicubic",
                                align_corners=False)
    ys = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1)
    xs = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w)
    angle = torch.rand(n, 1, 1, 1, generator=gen) * math.pi
    freq = 2.0 + 6.0 * torch.rand(n, 1, 1, 1, generator=gen)
    phase = torch.rand(n, 3, 1, 1, generator=gen) * 2 * math.pi
    grating = torch.sin(freq * math.pi * (xs * torch.cos(angle) + ys * torch.sin(angle)) + phase)
    amplitude = 0.12 * torch.rand(n, 3, 1, 1, generator=gen)
    noise = 0.04 * torch.randn(n, 3, h, w, generator=gen)
    return (base + blobs + amplitude * grating + noise).clamp(0.0, 1.0)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    pad_h, pad_w = min(radius, x.shape[2] - 1), min(radius, x.shape[3] - 1)
    x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    # Reflect padding is capped by the image size; zero-pad the rest so the kernel fits.
    x = F.pad(x, (radius - pad_w, radius - pad_w, radius - pad_h, radius - pad_h))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _elastic(images: torch.Tensor, gen: torch.Generator, alpha: float, sigma: float) -> torch.Tensor:
    n, _, h, w = images.shape
    field = _gaussian_blur(torch.rand(n, 2, h, w, generator=gen) * 2 - 1, sigma) * alpha
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack([xs + field[:, 0] * 2 / max(w - 1, 1), ys + field[:, 1] * 2 / max(h - 1, 1)], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def make_target_domain(
    data: LabelledImages | torch.Tensor,
    shift: str = "mnistm",
    seed: int = 0,
    *,
    elastic_alpha: float = 34.0,
    elastic_sigma: float = 4.0,
) -> LabelledImages | torch.Tensor:
    """The images of ``data`` under the domain ``shift`` (one of :data:`SHIFTS`), deterministic by ``seed``.

    ``data`` is a :class:`LabelledImages` (labels and attributes are kept) or an ``[N, C, H, W]``
    tensor in ``[0, 1]`` with strokes bright on a dark background, the toolkit's convention; the
    result is of the same kind. ``"mnistm"`` needs grey (or RGB) input and returns RGB;
    ``"invert-elastic"`` keeps the channels (``elastic_alpha`` and ``elastic_sigma`` in pixels,
    Simard et al. 2003's 34 and 4 by default). See the module docstring for both shifts.
    """
    _check_shift(shift)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    for name, value in (("elastic_alpha", elastic_alpha), ("elastic_sigma", elastic_sigma)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
            raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    images = _images_of(data).float().cpu()
    if shift == "mnistm" and images.shape[1] not in (1, 3):
        raise ConfigError(f"shift 'mnistm' needs grey (1-channel) or RGB images, got {images.shape[1]} channels")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(images), _CHUNK):
        x = images[start:start + _CHUNK]
        if shift == "mnistm":
            out.append((_textures(len(x), x.shape[2], x.shape[3], gen) - x).abs())
        else:
            warped = _elastic(x, gen, float(elastic_alpha), float(elastic_sigma)) if elastic_sigma > 0 else x
            out.append(1.0 - warped.clamp(0.0, 1.0))
    return _rewrap(data, torch.cat(out).clamp(0.0, 1.0).contiguous())
