"""Source and target sets for transfer experiments on Omniglot or the built-in glyphs.

The target is a set of characters never seen in the source, with ``shots`` labelled drawings per
character for training and held-out drawings for testing. The source is either near (other
alphabets of Omniglot, Lake et al. 2015, or other glyph classes) or far: the same source images
with inverted contrast (a shifted domain), or, for an Omniglot target, the procedural glyphs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from mtl.data.base import LabelledImages
from mtl.errors import ConfigError

__all__ = ["SOURCES", "TransferProblem", "make_transfer_problem", "remap_classes"]

SOURCES = ("near", "inverted", "glyphs")
"""Source kinds: other characters of the same data; those contrast-inverted; procedural glyphs."""

OMNIGLOT_SUBSETS = ("background_small1", "background_small2")


def remap_classes(data: LabelledImages) -> LabelledImages:
    """The same samples with the present class ids renumbered ``0..k-1`` (names kept)."""
    present = torch.unique(data.targets)
    lookup = torch.full((int(present.max()) + 1,), -1, dtype=torch.long)
    lookup[present] = torch.arange(len(present))
    names = [data.class_names[i] for i in present.tolist()]
    return LabelledImages(data.images, lookup[data.targets], names)


@dataclass
class TransferProblem:
    """A source set to pre-train on and a target split (``target_train`` / ``target_test``).

    ``target_pool`` holds the images (no labels) of every target drawing that is not a test
    drawing, e.g. to measure the source/target distance.
    """

    source: LabelledImages
    target_train: LabelledImages
    target_test: LabelledImages
    target_pool: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


def _target_split(target: LabelledImages, shots: int, pool: int,
                  seed: int) -> tuple[LabelledImages, LabelledImages, torch.Tensor]:
    """Per class: ``shots`` of the first ``pool`` samples (chosen by seed) train, samples after ``pool`` test."""
    per_class = torch.bincount(target.targets)
    if int(per_class.min()) <= pool:
        raise ConfigError(f"target classes need more than {pool} samples each, got {int(per_class.min())}")
    if not 1 <= shots <= pool:
        raise ConfigError(f"shots must be in 1..{pool}, got {shots!r}")
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx, pool_idx = [], [], []
    for cls in range(len(per_class)):
        idx = torch.nonzero(target.targets == cls).flatten()
        chosen = torch.randperm(pool, generator=gen)[:shots]
        train_idx.append(idx[chosen])
        test_idx.append(idx[pool:])
        pool_idx.append(idx[:pool])
    return target.select(torch.cat(train_idx)), target.select(torch.cat(test_idx)), target.images[torch.cat(pool_idx)]


def make_transfer_problem(dataset: str = "glyphs", *, source: str = "near", shots: int = 5,
                          root: str | os.PathLike | None = None, seed: int = 0, source_classes: int | None = None,
                          target_classes: int | None = None, image_size: int = 28) -> TransferProblem:
    """Build a source set and a target split.

    ``dataset="omniglot"`` reads the two small background subsets from ``root``: source = the
    alphabets of ``SHARED_SUBSET_SPLIT["train"]`` (175 characters), target = ``["test"]`` (Greek
    and Latin, 50 characters); training drawings come from drawers 1-10, test drawings are drawers
    11-20. ``dataset="glyphs"`` uses the procedural glyphs (source and target classes disjoint).
    ``source``: ``"near"``, ``"inverted"`` (``1 - x``) or ``"glyphs"`` (Omniglot target only).
    """
    if source not in SOURCES:
        raise ConfigError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if dataset == "omniglot":
        from mtl.data.omniglot import SHARED_SUBSET_SPLIT, alphabet_split, load_omniglot

        if root is None:
            raise ConfigError("dataset 'omniglot' needs root= (the folder with images_background_small{1,2}.zip)")
        data = load_omniglot(root, subsets=OMNIGLOT_SUBSETS, image_size=image_size)
        split = alphabet_split(data, SHARED_SUBSET_SPLIT["test"], SHARED_SUBSET_SPLIT["val"])
        src_ids, tgt_ids = split["train"], split["test"]
        if source_classes:
            src_ids = src_ids[:source_classes]
        if target_classes:
            tgt_ids = tgt_ids[:target_classes]
        src = remap_classes(data.with_classes(src_ids))
        tgt = remap_classes(data.with_classes(tgt_ids))
        if source == "glyphs":
            from mtl.data.glyphs import make_glyphs

            src = make_glyphs(len(src_ids), 20, image_size, seed=1)
    elif dataset == "glyphs":
        from mtl.data.glyphs import make_glyphs

        if source == "glyphs":
            raise ConfigError("source 'glyphs' applies to dataset 'omniglot'; with dataset 'glyphs' use near or "
                              "inverted")
        n_src, n_tgt = source_classes or 60, target_classes or 20
        src = make_glyphs(n_src, 20, image_size, seed=0)
        tgt = make_glyphs(n_tgt, 20, image_size, seed=0, class_offset=n_src)
    else:
        raise ConfigError(f"dataset must be 'omniglot' or 'glyphs', got {dataset!r}")
    if source == "inverted":
        src = LabelledImages(1.0 - src.images, src.targets, src.class_names)
    train, test, pool = _target_split(tgt, shots, 10, seed)
    info = {"dataset": dataset, "source": source, "shots": shots, "source_classes": src.num_classes,
            "source_samples": len(src), "target_classes": tgt.num_classes, "target_train": len(train),
            "target_test": len(test), "seed": seed}
    return TransferProblem(src, train, test, pool, info)
