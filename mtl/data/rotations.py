"""Rotation augmentation that turns every (class, angle) pair into a new class.

Introduced for Omniglot by Santoro et al. 2016 ("Meta-learning with memory-augmented neural
networks") and used by Vinyals et al. 2016 (Matching Networks): a character rotated by 90, 180 or
270 degrees is treated as a different character, multiplying the number of classes by four.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import torch

from mtl.data.base import LabelledImages
from mtl.errors import ConfigError, DatasetError

__all__ = ["add_rotated_classes", "expand_class_ids", "normalize_angles"]


def normalize_angles(angles: Sequence[int]) -> list[int]:
    """Angles in degrees reduced to ``0, 90, 180, 270``, checked to be distinct multiples of 90.

    Raises:
        ConfigError: for an empty list, a non-multiple of 90, or two equal rotations.
    """
    values = list(angles) if not isinstance(angles, (str, bytes)) else [angles]
    if not values:
        raise ConfigError("angles must hold at least one multiple of 90; got none")
    out: list[int] = []
    for angle in values:
        if (
            isinstance(angle, bool)
            or not isinstance(angle, numbers.Real)
            or angle % 90 != 0
        ):
            raise ConfigError(f"rotation angle {angle!r} is not allowed; use multiples of 90")
        norm = int(angle) % 360
        if norm in out:
            raise ConfigError(
                f"rotation angle {angle!r} repeats {norm} degrees; angles must be distinct mod 360"
            )
        out.append(norm)
    return out


def add_rotated_classes(
    dataset: LabelledImages, angles: Sequence[int] = (0, 90, 180, 270)
) -> LabelledImages:
    """Rotated copies of every image, each (class, angle) pair being its own class.

    Class ``c`` rotated by ``angles[a]`` (counter-clockwise, via :func:`torch.rot90` on the
    ``H, W`` axes) becomes class ``c * len(angles) + a`` named ``"<name>@<angle>"`` (angles
    reduced mod 360, so ``-90`` gives ``"@270"``; the ``@0`` copy is the original image).
    Samples are ordered angle by angle. Existing attributes are repeated for every copy, and a
    ``rotation`` attribute (index into ``angles``, names ``"0"``, ``"90"``, ...) is added. Use
    :func:`expand_class_ids` to map a split of the original classes onto the new ids.

    Raises:
        ConfigError: for angles that are not distinct multiples of 90.
        DatasetError: for non-square images with a 90/270 rotation, or a set that already has a
            ``rotation`` attribute.
    """
    norm = normalize_angles(angles)
    if "rotation" in dataset.attributes:
        raise DatasetError("dataset already has a 'rotation' attribute; rotate it only once")
    _, height, width = dataset.image_shape if len(dataset) else (0, 0, 0)
    if height != width and any(a % 180 for a in norm):
        raise DatasetError(
            f"images of {height}x{width} are not square; only angles 0 and 180 are allowed"
        )
    num = len(norm)
    images = torch.cat([torch.rot90(dataset.images, k=a // 90, dims=(2, 3)) for a in norm])
    targets = torch.cat([dataset.targets * num + i for i in range(num)])
    class_names = [f"{name}@{a}" for name in dataset.class_names for a in norm]
    attributes = {key: value.repeat(num) for key, value in dataset.attributes.items()}
    attributes["rotation"] = torch.arange(num).repeat_interleave(len(dataset))
    attribute_names = dict(dataset.attribute_names)
    attribute_names["rotation"] = [str(a) for a in norm]
    return LabelledImages(images, targets, class_names, attributes, attribute_names)


def expand_class_ids(ids: Iterable[int], num_angles: int) -> list[int]:
    """Map original class ids to the ids of all their rotations in :func:`add_rotated_classes`.

    Class ``c`` becomes ``c * num_angles + a`` for ``a`` in ``0..num_angles-1``, in the order of
    ``ids``; e.g. ``expand_class_ids([0, 2], 4) == [0, 1, 2, 3, 8, 9, 10, 11]``.

    Raises:
        ConfigError: for ``num_angles < 1`` or a negative id.
    """
    if isinstance(num_angles, bool) or not isinstance(num_angles, int) or num_angles < 1:
        raise ConfigError(f"num_angles must be a positive int, got {num_angles!r}")
    out: list[int] = []
    for cls in ids:
        cls = int(cls)
        if cls < 0:
            raise ConfigError(f"class id {cls} is negative; ids must be >= 0")
        out.extend(cls * num_angles + a for a in range(num_angles))
    return out
