"""A small registry of the toolkit's datasets, for discovery (``mtlmeta datasets``) and the CLI."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mtl.errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and how to load it (``loader`` is ``"module:function"``)."""

    name: str
    kind: str
    description: str
    loader: str
    needs_files: bool

    def load_function(self) -> Callable[..., Any]:
        """Import and return the loader function."""
        module, _, fn = self.loader.partition(":")
        return getattr(importlib.import_module(module), fn)


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset description to the registry (the name must be new)."""
    if info.name in _DATASETS:
        raise ConfigError(f"dataset {info.name!r} is already registered")
    _DATASETS[info.name] = info
    return info


def list_datasets() -> list[DatasetInfo]:
    """All registered datasets, sorted by name."""
    return [_DATASETS[k] for k in sorted(_DATASETS)]


def get_dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; an unknown name is a :class:`ConfigError` listing the known ones."""
    if name not in _DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(_DATASETS))}")
    return _DATASETS[name]


register_dataset(DatasetInfo(
    "glyphs", "classification",
    "procedural Omniglot-like glyphs, unlimited classes, 28x28, no file needed (the default)",
    "mtl.data.glyphs:make_glyphs", needs_files=False,
))
register_dataset(DatasetInfo(
    "omniglot", "classification",
    "Omniglot (Lake et al. 2015), official zips or folders; labels: character and alphabet",
    "mtl.data.omniglot:load_omniglot", needs_files=True,
))
register_dataset(DatasetInfo(
    "omniglot28-sheets", "unlabelled",
    "every Omniglot image at 28x28 as unlabelled sprite sheets (an unlabelled pool)",
    "mtl.data.sprites:load_omniglot_sprites", needs_files=True,
))
register_dataset(DatasetInfo(
    "sinusoid", "regression",
    "sinusoid regression tasks of Finn et al. 2017 (amplitude 0.1-5, phase 0-pi, x in [-5, 5])",
    "mtl.data.sinusoid:SinusoidTasks", needs_files=False,
))
