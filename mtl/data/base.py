"""In-memory labelled image sets: the common currency of every dataset in :mod:`mtl.data`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from mtl.errors import DatasetError


class LabelledImages(Dataset):
    """Images held in memory as one float tensor with integer class labels.

    Args:
        images: float tensor ``[N, C, H, W]`` with values in ``[0, 1]``.
        targets: long tensor ``[N]`` of class ids in ``0..num_classes-1``.
        class_names: one name per class id (default: ``"0"``, ``"1"``, ...).
        attributes: extra per-sample integer labels (e.g. ``{"alphabet": tensor[N]}``),
            used by multi-task learning.
        attribute_names: for each attribute, one name per value.

    ``dataset[i]`` returns ``(image, target)``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        class_names: Sequence[str] | None = None,
        attributes: dict[str, torch.Tensor] | None = None,
        attribute_names: dict[str, Sequence[str]] | None = None,
    ) -> None:
        if images.dim() != 4:
            raise DatasetError(f"images must have shape [N, C, H, W], got {tuple(images.shape)}")
        if targets.dim() != 1 or targets.shape[0] != images.shape[0]:
            raise DatasetError(
                f"targets must have shape [{images.shape[0]}], got {tuple(targets.shape)}"
            )
        self.images = images
        self.targets = targets.long()
        n_cls = int(self.targets.max()) + 1 if len(self.targets) else 0
        self.class_names = list(class_names) if class_names is not None else [
            str(i) for i in range(n_cls)
        ]
        if len(self.class_names) < n_cls:
            raise DatasetError(
                f"class_names has {len(self.class_names)} entries but labels go up to {n_cls - 1}"
            )
        self.attributes = dict(attributes or {})
        self.attribute_names = {k: list(v) for k, v in (attribute_names or {}).items()}
        for key, value in self.attributes.items():
            if value.shape != self.targets.shape:
                raise DatasetError(
                    f"attribute {key!r} must have shape [{len(self.targets)}], "
                    f"got {tuple(value.shape)}"
                )

    @property
    def num_classes(self) -> int:
        """Number of class ids (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

    def select(self, mask_or_index: torch.Tensor) -> LabelledImages:
        """A new set holding the selected samples; class ids and names are kept unchanged."""
        return LabelledImages(
            self.images[mask_or_index],
            self.targets[mask_or_index],
            self.class_names,
            {k: v[mask_or_index] for k, v in self.attributes.items()},
            self.attribute_names,
        )

    def with_classes(self, classes: Sequence[int]) -> LabelledImages:
        """Only the samples of the given class ids (ids are kept, not remapped)."""
        wanted = torch.as_tensor(list(classes), dtype=torch.long)
        return self.select(torch.isin(self.targets, wanted))

    def __repr__(self) -> str:
        c, h, w = self.image_shape if len(self) else (0, 0, 0)
        return (
            f"{type(self).__name__}(samples={len(self)}, classes={self.num_classes}, "
            f"image={c}x{h}x{w}, attributes={sorted(self.attributes)})"
        )
