"""Atomic, checksummed, safely loaded checkpoints.

File layout: one header line ``MTLMETA-CKPT 1 <sha256 of the rest>\\n`` followed by a
``torch.save`` payload. Writing goes to a temporary file in the same folder, is fsynced, then
renamed over the target, so a crash never leaves a half-written checkpoint in place. Loading
checks the checksum (a truncated or corrupted file is detected) and unpickles with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
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


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Save ``state`` (tensors, numbers, strings, lists and dicts of them) atomically with a checksum."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    return atomic_write_bytes(path, MAGIC + digest + b"\n" + payload)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (or a plain ``torch.save`` file) safely.

    Raises :class:`CheckpointError` when the file is missing, truncated, corrupted, or carries
    pickled objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    raw = path.read_bytes()
    if raw.startswith(MAGIC):
        header, sep, payload = raw.partition(b"\n")
        expected = header[len(MAGIC):].decode("ascii", "replace")
        if not sep or hashlib.sha256(payload).hexdigest() != expected:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is truncated or corrupted (checksum mismatch)"
            )
    else:
        payload = raw
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} was refused: it carries pickled objects that are not "
            f"tensors or plain containers ({first[:160]})"
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {str(exc)[:200]}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a dict")
    return state
