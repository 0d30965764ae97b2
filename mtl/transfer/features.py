"""Bottleneck features: run the frozen lower part of a network once, cache its outputs, train the top on them.

When the lower layers are frozen their outputs never change, so computing them every epoch is
wasted work (the "bottleneck" trick of the Inception retraining recipe; Donahue et al. 2014 used
such fixed features, DeCAF, for new tasks). :func:`split_at` cuts a registry backbone into the
frozen part and the trainable part; :class:`FeatureCache` keeps the frozen part's outputs in
memory and/or on disk, keyed by a fingerprint of the frozen weights and of the data, so a changed
model or data set is never served stale features; :func:`train_on_features` trains the top part on
the cache.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mtl.data.base import LabelledImages
from mtl.errors import CheckpointError, ConfigError
from mtl.training import TrainHistory, predict_logits, train_classifier
from mtl.utils.checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "FeatureCache",
    "SplitModel",
    "fingerprint_module",
    "fingerprint_tensor",
    "split_at",
    "train_on_features",
]


def fingerprint_tensor(x: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{x.dtype}|{tuple(x.shape)}|".encode())
    flat = x.detach().cpu().contiguous().reshape(-1)
    if flat.numel():
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint_module(module: nn.Module) -> str:
    """SHA-256 of a module's structure (its ``repr``) and of every named parameter and buffer."""
    digest = hashlib.sha256(repr(module).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(fingerprint_tensor(tensor).encode())
    return digest.hexdigest()


@dataclass
class SplitModel:
    """A model cut in two: ``lower`` (to freeze and cache) and ``upper`` (to train); modules are shared."""

    lower: nn.Module
    upper: nn.Module
    layer: str


def split_at(model: nn.Module, layer: str) -> SplitModel:
    """Cut a registry backbone after the trunk layer ``layer`` (``"block2"``, ``"features.block2"``).

    ``layer="features"`` puts the whole trunk below the cut and only the head above it. The two
    parts share the model's modules, so training ``upper`` trains the model itself.
    """
    trunk = getattr(model, "features", None)
    if not isinstance(trunk, nn.Sequential):
        raise ConfigError(f"split_at needs a model with a Sequential .features trunk, got {type(model).__name__}")
    head = getattr(model, "head", None)
    children = [n for n, _ in trunk.named_children()]
    short = layer.removeprefix("features.")
    if layer == "features":
        cut = len(children)
    elif short in children:
        cut = children.index(short) + 1
    else:
        raise ConfigError(f"layer {layer!r} is not a trunk layer; choose one of: features, "
                          + ", ".join(f"features.{c}" for c in children))
    lower = nn.Sequential(*[trunk[i] for i in range(cut)])
    rest = [trunk[i] for i in range(cut, len(children))]
    if head is not None:
        rest.append(head)
    return SplitModel(lower, nn.Sequential(*rest), layer)


class FeatureCache:
    """Outputs of a frozen module over a data set, computed once and reused.

    Entries are keyed by ``fingerprint_module(extractor)`` and ``fingerprint_tensor(images)``: new
    weights or new data give a new key. With ``directory`` the features are also written there
    (checksummed, loaded with ``weights_only``) and found again by later processes. ``hits`` and
    ``misses`` count lookups.
    """

    def __init__(self, directory: str | os.PathLike | None = None, memory: bool = True) -> None:
        self.directory = None if directory is None else Path(directory)
        self.memory = memory
        self._store: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def key(self, extractor: nn.Module, images: torch.Tensor) -> str:
        """The cache key of ``extractor`` applied to ``images``."""
        return f"{fingerprint_module(extractor)[:20]}-{fingerprint_tensor(images)[:20]}"

    def _path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"features-{key}.pt"

    def get(self, extractor: nn.Module, images: torch.Tensor, batch_size: int = 256,
            device: torch.device | str | None = None) -> torch.Tensor:
        """The features of ``images`` (eval mode, no gradients), from the cache or computed and stored."""
        key = self.key(extractor, images)
        if key in self._store:
            self.hits += 1
            return self._store[key]
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                state = load_checkpoint(path)
                feats = state["features"]
                if state.get("key") == key and isinstance(feats, torch.Tensor) and len(feats) == len(images):
                    self.hits += 1
                    if self.memory:
                        self._store[key] = feats
                    return feats
            except (CheckpointError, KeyError):
                pass  # an unreadable entry is recomputed and rewritten
        self.misses += 1
        feats = predict_logits(extractor, images, batch_size=batch_size, device=device)
        if self.memory:
            self._store[key] = feats
        if path is not None:
            save_checkpoint(path, {"key": key, "features": feats})
        return feats

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk are kept)."""
        self._store.clear()


class _FromFeatures(nn.Module):
    """Feeds cached features, stored flat as ``[B, D, 1, 1]``, back in their original shape."""

    def __init__(self, upper: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.upper = upper
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upper(x.reshape(x.shape[0], *self.shape))


def train_on_features(model: nn.Module, layer: str, data: LabelledImages, *, cache: FeatureCache | None = None,
                      val: LabelledImages | None = None, feature_batch_size: int = 256,
                      device: torch.device | str = "cpu", **train_kwargs: object) -> TrainHistory:
    """Freeze ``model`` up to the trunk layer ``layer``, cache that part's outputs, train the rest on them.

    The lower part runs once in eval mode (BatchNorm with its running statistics), exactly as a
    frozen part runs inside the full model, so the result equals training the full model with the
    lower part frozen, at a fraction of the cost. ``train_kwargs`` go to
    :func:`mtl.training.train_classifier` (epochs, lr, optimizer, scheduler, ...).
    """
    from mtl.transfer.freezing import _hold_batchnorm_stats

    parts = split_at(model, layer)
    for p in parts.lower.parameters():
        p.requires_grad_(False)
    _hold_batchnorm_stats(model)
    cache = cache or FeatureCache()
    parts.lower.to(device)
    feats = cache.get(parts.lower, data.images, feature_batch_size, device)
    shape = tuple(feats.shape[1:])
    flat = LabelledImages(feats.reshape(len(feats), -1, 1, 1), data.targets, data.class_names)
    val_flat = None
    if val is not None:
        vf = cache.get(parts.lower, val.images, feature_batch_size, device)
        val_flat = LabelledImages(vf.reshape(len(vf), -1, 1, 1), val.targets, val.class_names)
    top = _FromFeatures(parts.upper, shape)
    return train_classifier(top, flat, val=val_flat, device=device, **train_kwargs)  # type: ignore[arg-type]
