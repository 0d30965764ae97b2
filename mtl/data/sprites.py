"""Unlabelled Omniglot at 28x28, read from sprite sheets.

The sheets ``images_background.png`` (19,280 tiles) and ``images_evaluation.png`` (13,180 tiles)
hold every Omniglot image (Lake, Salakhutdinov and Tenenbaum 2015) resized to 28x28 and inverted
(white strokes on black, RGBA with equal RGB), 20 tiles per row in a random order. Their order
does not match any published label file, so they are treated as unlabelled: an image pool for
self-training, unsupervised pre-training or timing work at full-dataset scale. Decoding a sheet
takes a fraction of a second, so nothing is cached.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from mtl.errors import ConfigError, DatasetError

__all__ = ["SPRITE_SUBSETS", "UnlabelledImages", "load_omniglot_sprites", "load_sprite_sheet"]

SPRITE_SUBSETS: tuple[str, ...] = ("background", "evaluation", "all")
"""Subsets of :func:`load_omniglot_sprites`; ``"all"`` is background followed by evaluation."""


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


def load_sprite_sheet(
    path: str | os.PathLike, tile_size: int = 28, tiles_per_row: int = 20
) -> torch.Tensor:
    """Cut a sprite sheet into tiles, left to right, top to bottom.

    The sheet must be exactly ``tile_size * tiles_per_row`` pixels wide and a multiple of
    ``tile_size`` high. It is read as grayscale (``PIL`` ``"L"`` conversion; the alpha channel is
    ignored), scaled to ``[0, 1]`` and kept as is, so white strokes on black give the toolkit's
    convention (strokes = 1). A partly filled last row is padded with empty tiles: every
    all-zero tile after the last tile with any non-zero pixel is dropped (an empty tile earlier
    in the sheet is kept, so positions stay meaningful).

    Returns:
        float32 tensor ``[N, 1, tile_size, tile_size]``.

    Raises:
        DatasetError: for a missing or unreadable file, or a sheet size that does not fit the
            tiling (the message names the size).
        ConfigError: for a non-positive ``tile_size`` or ``tiles_per_row``.
    """
    _positive_int("tile_size", tile_size)
    _positive_int("tiles_per_row", tiles_per_row)
    sheet_path = Path(path).expanduser()
    if not sheet_path.is_file():
        raise DatasetError(f"sprite sheet {sheet_path} does not exist")
    try:
        with Image.open(sheet_path) as img:
            gray = np.asarray(img.convert("L"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"cannot read sprite sheet {sheet_path}: {exc}") from None
    height, width = gray.shape
    if width != tile_size * tiles_per_row or height % tile_size or height == 0:
        raise DatasetError(
            f"sprite sheet {sheet_path} is {width}x{height} pixels; expected width "
            f"{tile_size * tiles_per_row} ({tiles_per_row} tiles of {tile_size}) and a height "
            f"that is a multiple of {tile_size}"
        )
    rows = height // tile_size
    tiles = (
        gray.reshape(rows, tile_size, tiles_per_row, tile_size)
        .transpose(0, 2, 1, 3)
        .reshape(rows * tiles_per_row, tile_size, tile_size)
    )
    non_empty = np.flatnonzero(tiles.reshape(len(tiles), -1).any(axis=1))
    count = int(non_empty[-1]) + 1 if len(non_empty) else 0
    out = torch.from_numpy(np.ascontiguousarray(tiles[:count])).float().div_(255.0)
    return out.unsqueeze(1)


def load_omniglot_sprites(root: str | os.PathLike, subset: str = "background") -> torch.Tensor:
    """The 28x28 Omniglot sprite sheets in ``root`` as one unlabelled tensor.

    Args:
        root: folder holding ``images_background.png`` and/or ``images_evaluation.png``.
        subset: ``"background"`` (19,280 images, the 30 background alphabets),
            ``"evaluation"`` (13,180 images, the 20 evaluation alphabets) or ``"all"`` (both,
            background first).

    Returns:
        float32 tensor ``[N, 1, 28, 28]``, strokes = 1 on a 0 background.

    Raises:
        ConfigError: for an unknown subset.
        DatasetError: for a missing or malformed sheet (naming its path).
    """
    if subset not in SPRITE_SUBSETS:
        raise ConfigError(
            f"unknown sprite subset {subset!r}; allowed: {', '.join(SPRITE_SUBSETS)}"
        )
    names = ["background", "evaluation"] if subset == "all" else [subset]
    base = Path(root).expanduser()
    return torch.cat([load_sprite_sheet(base / f"images_{name}.png") for name in names])


class UnlabelledImages(Dataset):
    """Images without labels, held in memory; ``dataset[i]`` returns the image only.

    Args:
        images: float tensor ``[N, C, H, W]`` with values in ``[0, 1]``.
    """

    def __init__(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise DatasetError(f"images must be a tensor of shape [N, C, H, W], got {shape}")
        if not images.is_floating_point():
            raise DatasetError(f"images must be a float tensor in [0, 1], got {images.dtype}")
        self.images = images

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return f"{type(self).__name__}(samples={len(self)}, image={c}x{h}x{w})"
