"""Named checkpoints with metadata, and restoring only some layers of a model by name.

A transfer checkpoint stores a model's ``state_dict`` under its parameter and buffer names together
with how to rebuild it (registry backbone name and arguments, head sizes). :func:`load_partial`
restores the tensors whose names match a regular expression, as TensorFlow's
``Saver(var_list=tf.get_collection(..., scope="hidden[123]"))`` does, and reports what was matched,
missing, unexpected or of the wrong shape. Files are either the toolkit's checksummed format, loaded
with ``torch.load(weights_only=True)`` through :mod:`mtl.utils.checkpoint`, or safetensors files
(``.safetensors``); neither ever unpickles an arbitrary object.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtl.errors import CheckpointError, ConfigError
from mtl.transfer.freezing import _compile
from mtl.transfer.safetensors_io import read_safetensors, write_safetensors
from mtl.utils.checkpoint import load_checkpoint, save_checkpoint
from mtl.utils.runtime import check_new_output

__all__ = [
    "FORMAT",
    "NamedCheckpoint",
    "PartialLoad",
    "backbone_mismatch",
    "build_from_checkpoint",
    "check_init_backbone",
    "load_partial",
    "model_metadata",
    "read_named_checkpoint",
    "save_named_checkpoint",
]

FORMAT = "mtlmeta-transfer/1"
"""The ``format`` field of a transfer checkpoint."""


def _plain(value: Any) -> Any:
    """``value`` with tuples turned into lists and unknown objects into strings (JSON-safe)."""
    return json.loads(json.dumps(value, default=str))


def model_metadata(model: nn.Module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What is needed to rebuild ``model``: registry name and arguments, feature and head sizes.

    ``extra`` (JSON-safe values) is stored alongside, e.g. the source dataset or classes.
    """
    head = getattr(model, "head", None)
    meta: dict[str, Any] = {
        "backbone": getattr(model, "backbone_name", None),
        "backbone_kwargs": _plain(getattr(model, "backbone_kwargs", {})),
        "out_features": getattr(model, "out_features", None),
        "head": None if not isinstance(head, nn.Linear) else {"in_features": head.in_features,
                                                              "out_features": head.out_features},
        "model_class": type(model).__name__,
    }
    if extra:
        meta["extra"] = _plain(extra)
    return meta


@dataclass
class NamedCheckpoint:
    """A state dict read from disk with its metadata (``{}`` for a bare state dict)."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    path: str = ""


def save_named_checkpoint(path: str | os.PathLike, model: nn.Module, *, extra: dict[str, Any] | None = None,
                          overwrite: bool = False) -> Path:
    """Save ``model``'s named tensors and :func:`model_metadata` to ``path``.

    A path ending in ``.safetensors`` is written in the safetensors layout (metadata as JSON in its
    header); any other path in the toolkit's checksummed format. An existing file is kept unless
    ``overwrite``.
    """
    check_new_output(path, overwrite, what="checkpoint")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    meta = model_metadata(model, extra)
    if str(path).endswith(".safetensors"):
        return write_safetensors(path, state, {"format": FORMAT, "mtlmeta": json.dumps(meta)})
    return save_checkpoint(path, {"format": FORMAT, "metadata": meta, "state_dict": state})


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def read_named_checkpoint(path: str | os.PathLike) -> NamedCheckpoint:
    """Read a transfer checkpoint, a safetensors file, or a bare ``torch.save(model.state_dict())`` file.

    Loading never unpickles arbitrary objects: a file that carries one is refused with a
    :class:`CheckpointError`.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        tensors, raw_meta = read_safetensors(path)
        try:
            meta = json.loads(raw_meta.get("mtlmeta", "{}"))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"checkpoint {str(path)!r} has unreadable metadata: {exc}") from None
        return NamedCheckpoint(tensors, meta if isinstance(meta, dict) else {}, str(path))
    state = load_checkpoint(path)
    if state.get("format") == FORMAT:
        sd, meta = state.get("state_dict"), state.get("metadata")
        if not _is_state_dict(sd) or not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {str(path)!r} claims format {FORMAT} but its content is malformed")
        return NamedCheckpoint(sd, meta, str(path))
    if _is_state_dict(state):
        return NamedCheckpoint(state, {}, str(path))
    for key in ("state_dict", "model"):
        if _is_state_dict(state.get(key)):
            return NamedCheckpoint(state[key], {}, str(path))
    raise CheckpointError(f"checkpoint {str(path)!r} holds no named tensors (keys: {sorted(state)[:8]})")


@dataclass
class PartialLoad:
    """What :func:`load_partial` did.

    ``matched``: restored names; ``missing``: selected model tensors absent from the checkpoint;
    ``unexpected``: selected checkpoint tensors the model does not have; ``shape_mismatched``:
    ``(name, checkpoint shape, model shape)`` of selected tensors left untouched because the shapes
    differ; ``untouched``: model tensors the pattern does not select.
    """

    pattern: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[tuple[str, list[int], list[int]]] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain lists (for JSON)."""
        return _plain(asdict(self))

    def summary(self) -> str:
        """One line: how many tensors fell in each category."""
        return (f"pattern {self.pattern!r}: {len(self.matched)} restored, {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.shape_mismatched)} shape-mismatched, "
                f"{len(self.untouched)} not selected")


ON_MISMATCH = ("error", "skip")


def backbone_mismatch(model: nn.Module, ckpt: NamedCheckpoint) -> str | None:
    """Why ``ckpt`` holds another registry backbone than ``model``, or ``None`` when it does not.

    Compares the checkpoint's recorded ``backbone`` with ``model.backbone_name``; a checkpoint
    or model that does not name one is never a mismatch. The reason names both, e.g.
    ``"holds a 'resnet12' backbone ({...}), but the model is a 'conv4'"``.
    """
    theirs = ckpt.metadata.get("backbone")
    ours = getattr(model, "backbone_name", None)
    if theirs and ours and theirs != ours:
        return f"holds a {theirs!r} backbone ({ckpt.metadata.get('backbone_kwargs')}), but the model is a {ours!r}"
    return None


def check_init_backbone(model: nn.Module, ckpt: NamedCheckpoint, option: str = "--init") -> None:
    """For command lines: refuse a starting checkpoint of another registry backbone than ``model``.

    Raises :class:`ConfigError` naming both backbones and the ``--backbone`` that would fit.
    """
    mismatch = backbone_mismatch(model, ckpt)
    if mismatch:
        raise ConfigError(f"{option} {ckpt.path!r} {mismatch.replace('the model', 'this run')}: pass --backbone "
                          f"{ckpt.metadata['backbone']} (with the same --backbone-kwargs) to start from it")


def load_partial(model: nn.Module, source: str | os.PathLike | NamedCheckpoint, pattern: str = ".*", *,
                 on_shape_mismatch: str = "error", check_backbone: bool = True, strict: bool = False) -> PartialLoad:
    """Restore into ``model`` only the checkpoint tensors whose names match ``pattern`` (``re.search``).

    Tensors are copied in place, so optimizers holding the parameters stay valid; nothing outside the
    pattern is touched. ``on_shape_mismatch="error"`` (default) refuses a selected tensor of another
    shape, naming it; ``"skip"`` leaves it and reports it. ``strict`` also refuses missing or
    unexpected selected tensors. With ``check_backbone`` a checkpoint whose metadata names another
    registry backbone than ``model.backbone_name`` is refused.

    Raises:
        ConfigError: for a pattern that selects nothing to restore (the message lists some names).
        CheckpointError: for a checkpoint of another backbone, shape mismatches, or (``strict``)
            missing / unexpected tensors, each naming the tensors.
    """
    if on_shape_mismatch not in ON_MISMATCH:
        raise ConfigError(f"on_shape_mismatch must be one of {', '.join(ON_MISMATCH)}, got {on_shape_mismatch!r}")
    ckpt = source if isinstance(source, NamedCheckpoint) else read_named_checkpoint(source)
    where = f"checkpoint {ckpt.path!r}" if ckpt.path else "checkpoint"
    mismatch = backbone_mismatch(model, ckpt) if check_backbone else None
    if mismatch:
        raise CheckpointError(f"{where} {mismatch}; pass check_backbone=False to restore matching names anyway")
    regex: re.Pattern[str] = _compile(pattern)
    target = model.state_dict()
    report = PartialLoad(pattern)
    sel_model = [n for n in target if regex.search(n)]
    sel_ckpt = [n for n in ckpt.state_dict if regex.search(n)]
    if not sel_model and not sel_ckpt:
        names = list(ckpt.state_dict)
        raise ConfigError(f"pattern {pattern!r} matches no tensor name in the model or the {where}; names look "
                          f"like: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''}")
    report.untouched = [n for n in target if not regex.search(n)]
    report.missing = [n for n in sel_model if n not in ckpt.state_dict]
    report.unexpected = [n for n in sel_ckpt if n not in target]
    to_copy = []
    for name in sel_model:
        if name not in ckpt.state_dict:
            continue
        src, dst = ckpt.state_dict[name], target[name]
        if tuple(src.shape) != tuple(dst.shape):
            report.shape_mismatched.append((name, list(src.shape), list(dst.shape)))
        else:
            to_copy.append(name)
    if report.shape_mismatched and on_shape_mismatch == "error":
        shown = "; ".join(f"{n}: checkpoint {tuple(a)} vs model {tuple(b)}" for n, a, b in report.shape_mismatched[:6])
        more = f" (+{len(report.shape_mismatched) - 6} more)" if len(report.shape_mismatched) > 6 else ""
        raise CheckpointError(f"{where}: shape mismatch for {shown}{more}; narrow the pattern or pass "
                              "on_shape_mismatch='skip'")
    if strict and (report.missing or report.unexpected):
        raise CheckpointError(f"{where}: pattern {pattern!r} selects tensors missing from the checkpoint "
                              f"{report.missing[:6]} or not in the model {report.unexpected[:6]}")
    if not to_copy:
        raise ConfigError(f"pattern {pattern!r} restores nothing: {report.summary()}")
    with torch.no_grad():
        for name in to_copy:
            target[name].copy_(ckpt.state_dict[name].to(device=target[name].device, dtype=target[name].dtype))
    report.matched = to_copy
    return report


def build_from_checkpoint(source: str | os.PathLike | NamedCheckpoint) -> nn.Module:
    """Rebuild a registry model from a transfer checkpoint's metadata and restore all its tensors."""
    from mtl.backbones import create_backbone

    ckpt = source if isinstance(source, NamedCheckpoint) else read_named_checkpoint(source)
    name = ckpt.metadata.get("backbone")
    if not name:
        raise CheckpointError(f"checkpoint {ckpt.path!r} has no backbone metadata; build the model yourself and use "
                              "load_partial")
    kwargs = dict(ckpt.metadata.get("backbone_kwargs") or {})
    head = ckpt.metadata.get("head")
    kwargs["num_classes"] = head["out_features"] if head else None
    model = create_backbone(name, **kwargs)
    load_partial(model, ckpt, ".*", strict=True)
    return model
