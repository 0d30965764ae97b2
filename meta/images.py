"""Reading a user's own images for few-shot prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mtl.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: str | Path, image_shape: tuple[int, int, int], invert: str = "auto") -> torch.Tensor:
    """One image as ``[C, H, W]`` float in [0, 1], resized (anti-aliased) to ``image_shape``.

    ``invert``: ``"auto"`` flips images whose mean is above 0.5 (dark strokes on a light page)
    to the toolkit's bright-strokes-on-dark convention; ``"yes"`` or ``"no"`` force it.
    """
    path = Path(path)
    channels, height, width = image_shape
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            img = img.resize((width, height), Image.LANCZOS)
            array = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {str(path)!r}: {str(exc).splitlines()[0][:120]}") from exc
    tensor = torch.from_numpy(array)
    tensor = tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1)
    if invert == "yes" or (invert == "auto" and float(tensor.mean()) > 0.5):
        tensor = 1.0 - tensor
    return tensor.contiguous()


def load_support_folder(
    folder: str | Path, image_shape: tuple[int, int, int], invert: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A support set from ``folder/<class name>/<images>``: images, labels 0..N-1, class names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--support {str(folder)!r} is not a folder (expected one sub-folder per class)")
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"--support {str(folder)!r} has no class sub-folders (one per class expected)")
    images, labels = [], []
    for label, cls in enumerate(classes):
        files = _files(cls)
        if not files:
            raise DatasetError(
                f"support class folder {str(cls)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        for f in files:
            images.append(load_image(f, image_shape, invert))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels), [c.name for c in classes]


def load_query_folder(
    folder: str | Path, image_shape: tuple[int, int, int], invert: str = "auto"
) -> tuple[torch.Tensor, list[str]]:
    """Query images from ``folder`` (files directly inside it) and their file names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--query {str(folder)!r} is not a folder of images")
    files = _files(folder)
    if not files:
        raise DatasetError(f"--query {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return torch.stack([load_image(f, image_shape, invert) for f in files]), [f.name for f in files]
