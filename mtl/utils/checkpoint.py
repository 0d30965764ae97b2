"""Atomic, checksummed, safely loaded checkpoints.

File layout: one header line ``MTLMETA-CKPT 1 <sha256 of the rest>\\n`` followed by a
``torch.save`` payload. Writing goes to a temporary file in the same folder, is fsynced, then
renamed over the target, so a crash never leaves a half-written checkpoint in place. Loading
checks the checksum (a truncated or corrupted file is detected) and unpickles with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.

With ``keep_previous=True`` the checkpoint being replaced is first kept as ``<name>.prev<ext>``
(only when it passes its own checksum), and :func:`load_checkpoint_or_previous` falls back to
that previous good checkpoint when the newest one is missing, truncated or corrupted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mtl.errors import CheckpointError

MAGIC = b"MTLMETA-CKPT 1 "


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON (with a final newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def previous_path(path: str | os.PathLike) -> Path:
    """Where :func:`save_checkpoint` keeps the replaced checkpoint: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check the header and checksum of ``path`` without unpickling it; raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    _payload(path, path.read_bytes())


def _payload(path: Path, raw: bytes) -> bytes:
    if not raw.startswith(MAGIC):
        if len(raw) == 0:
            raise CheckpointError(f"checkpoint {str(path)!r} is empty (truncated)")
        if not raw.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip, or a legacy pickle
            raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupted (not a checkpoint file: "
                                  "no mtlmeta header, no torch.save archive)")
        return raw
    header, sep, payload = raw.partition(b"\n")
    expected = header[len(MAGIC):].decode("ascii", "replace")
    if not sep or hashlib.sha256(payload).hexdigest() != expected:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupted (checksum mismatch)")
    return payload


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], keep_previous: bool = False) -> Path:
    """Save ``state`` (tensors, numbers, strings, lists and dicts of them) atomically with a checksum.

    With ``keep_previous`` an existing, intact checkpoint at ``path`` is kept as
    :func:`previous_path` before being replaced (a corrupted one is not allowed to push out the
    previous good one). ``path`` itself always holds a complete checkpoint: the old one or the new.
    """
    path = Path(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"a checkpoint state must be a dict, got {type(state).__name__}")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    if keep_previous and path.is_file():
        try:
            verify_checkpoint(path)
        except CheckpointError:
            pass  # keep the older .prev: it is the last good one
        else:
            _keep_copy(path, previous_path(path))
    return atomic_write_bytes(path, MAGIC + digest + b"\n" + payload)


def _keep_copy(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` atomically (a hard link where the file system allows)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (or a plain ``torch.save`` file) safely.

    Raises :class:`CheckpointError` when the file is missing, truncated, corrupted, or carries
    pickled objects other than tensors and plain containers.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {exc}") from exc
    payload = _payload(path, raw)
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} was refused: it carries pickled objects that are not "
            f"tensors or plain containers ({first[:160]})"
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError, KeyError,
            IndexError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {str(exc)[:200]}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a dict")
    return state


def load_checkpoint_or_previous(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    fallback: bool = True,
    warn: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Load ``path``; if it is missing, truncated or corrupted, consider :func:`previous_path`.

    With ``fallback`` the previous good checkpoint is loaded instead, announced through ``warn``
    (default: :func:`warnings.warn`); without it the :class:`CheckpointError` names the previous
    checkpoint and says how to continue from it. Returns the state and the file it came from.
    An intact checkpoint refused as unsafe (pickled objects) is never replaced by another one.
    """
    path = Path(path)
    try:
        return load_checkpoint(path, map_location), path
    except CheckpointError as exc:
        first = str(exc)
        if "refused" in first:
            raise
    previous = previous_path(path)
    if not previous.is_file():
        raise CheckpointError(first)
    try:
        state = load_checkpoint(previous, map_location)
    except CheckpointError as exc:
        raise CheckpointError(f"{first}; the previous checkpoint is unusable too: {exc}") from None
    if not fallback:
        raise CheckpointError(f"{first}; the previous good checkpoint {str(previous)!r} is intact: rename it to "
                              f"{path.name!r} to continue from there")
    message = f"{first}; using the previous good checkpoint {str(previous)!r} instead"
    (warn or (lambda m: warnings.warn(m, stacklevel=3)))(message)
    return state, previous
