"""Reading and writing the safetensors file layout without any pickling.

A safetensors file is an 8-byte little-endian header length ``N``, ``N`` bytes of JSON mapping each
tensor name to ``{"dtype", "shape", "data_offsets"}`` (plus an optional ``"__metadata__"`` of string
pairs), then the raw little-endian tensor bytes. Loading it executes no code, whatever the file
holds. This module writes and reads that layout itself, so the toolkit does not need the
``safetensors`` package; every offset, shape and dtype is checked before a byte is interpreted.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import torch

from mtl.errors import CheckpointError
from mtl.utils.checkpoint import atomic_write_bytes

__all__ = ["read_safetensors", "write_safetensors"]

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_CODES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def _raw_bytes(t: torch.Tensor) -> bytes:
    flat = t.detach().cpu().contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    data = flat.view(torch.uint8).numpy().tobytes()
    if sys.byteorder != "little" and flat.element_size() > 1:  # pragma: no cover - big-endian hosts
        data = flat.numpy().byteswap().tobytes()
    return data


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (name -> tensor) and string ``metadata`` to ``path`` atomically."""
    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise CheckpointError("safetensors metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _CODES:
            raise CheckpointError(f"tensor {name!r} has dtype {t.dtype}, which safetensors cannot hold")
        data = _raw_bytes(t)
        header[name] = {"dtype": _CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return atomic_write_bytes(path, struct.pack("<Q", len(text)) + text + b"".join(chunks))


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``; malformed files raise :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    raw = path.read_bytes()
    where = f"safetensors file {str(path)!r}"
    if len(raw) < 8:
        raise CheckpointError(f"{where} is truncated (no header)")
    (size,) = struct.unpack("<Q", raw[:8])
    if size > _MAX_HEADER or 8 + size > len(raw):
        raise CheckpointError(f"{where} has a header of {size} bytes, larger than the file allows")
    try:
        header = json.loads(raw[8:8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where} has an unreadable header: {exc}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{where} has a header that is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{where} has metadata that is not a string-to-string map")
    body = raw[8 + size:]
    tensors: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: tensor {name!r} has a malformed entry ({exc!r})") from None
        numel = 1
        for s in shape:
            if s < 0:
                raise CheckpointError(f"{where}: tensor {name!r} has a negative dimension {shape}")
            numel *= s
        item = torch.empty((), dtype=dtype).element_size()
        if not 0 <= begin <= end <= len(body) or end - begin != numel * item:
            raise CheckpointError(f"{where}: tensor {name!r} has offsets [{begin}, {end}] that do not fit "
                                  f"shape {shape} of {info['dtype']} in {len(body)} data bytes")
        if numel == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(bytearray(body[begin:end]), dtype=dtype).reshape(shape)
    return tensors, dict(metadata)
