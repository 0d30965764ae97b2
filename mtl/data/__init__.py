"""Datasets and episodes: every set is a :class:`LabelledImages` (or a task sampler), deterministic by seed.

- :func:`make_glyphs` — the built-in procedural Omniglot-like glyphs (no file needed);
- :func:`load_omniglot` — Omniglot from the official zips or folders (``download=True`` fetches them);
- :func:`load_omniglot_sprites` — the unlabelled 28x28 sprite sheets;
- :class:`SinusoidTasks` — Finn et al. 2017 sinusoid regression;
- :class:`EpisodeSampler` — N-way K-shot Q-query episodes over any labelled set;
- :func:`random_shift` — random translations, reproducible by generator.
- :func:`random_affine` — random rotations, stretches and shears, reproducible by generator;
  :func:`rotate` — one fixed rotation; :func:`tta_views` — shifted and rotated copies for test-time augmentation.
"""

from mtl.data.augment import random_affine, random_shift, rotate, tta_views
from mtl.data.base import LabelledImages
from mtl.data.episodes import Episode, EpisodeSampler, split_classes
from mtl.data.glyphs import make_glyphs
from mtl.data.omniglot import (
    SHARED_SUBSET_SPLIT,
    alphabet_split,
    download_omniglot,
    drawer_split,
    load_omniglot,
    vinyals_split,
)
from mtl.data.registry import get_dataset_info, list_datasets
from mtl.data.rotations import add_rotated_classes, expand_class_ids
from mtl.data.sinusoid import SinusoidBatch, SinusoidTasks
from mtl.data.sprites import UnlabelledImages, load_omniglot_sprites, load_sprite_sheet

__all__ = [
    "SHARED_SUBSET_SPLIT",
    "Episode",
    "EpisodeSampler",
    "LabelledImages",
    "SinusoidBatch",
    "SinusoidTasks",
    "UnlabelledImages",
    "add_rotated_classes",
    "alphabet_split",
    "download_omniglot",
    "drawer_split",
    "expand_class_ids",
    "get_dataset_info",
    "list_datasets",
    "load_omniglot",
    "load_omniglot_sprites",
    "load_sprite_sheet",
    "make_glyphs",
    "random_affine",
    "random_shift",
    "rotate",
    "tta_views",
    "split_classes",
    "vinyals_split",
]
