"""Mixed-precision training: bfloat16 autocast on CPUs with AMX / AVX512-BF16 and on GPUs.

``bf16`` runs the matrix products and convolutions of the forward pass (and so of its
backward) in bfloat16 while the parameters, their gradients and the optimizer state stay in
float32: the "mixed precision" of Micikevicius et al. 2018, with bfloat16's float32 exponent
range (Kalamkar et al. 2019) so that no loss scaling is needed. Evaluation stays in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from mtl.errors import ConfigError

__all__ = ["PRECISIONS", "check_precision", "autocast", "bf16_is_native", "autocast_state", "restore_autocast"]

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: object) -> str:
    """Return ``precision`` unchanged, raising :class:`ConfigError` unless it is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision  # type: ignore[return-value]


def bf16_is_native(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (CPU: AMX or AVX512-BF16; CUDA: compute
    capability 8.0 or later). Elsewhere bfloat16 still works, emulated and usually slower."""
    dev = torch.device(device)
    if dev.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str) -> Iterator[None]:
    """``torch.autocast`` to bfloat16 on ``device`` for ``precision="bf16"``; nothing for ``"fp32"``."""
    check_precision(precision)
    if precision == "fp32":
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        yield


def autocast_state(device_type: str) -> tuple[bool, torch.dtype]:
    """This thread's autocast setting for ``device_type``: (enabled, dtype).

    Autocast is thread-local: code that runs autograd on worker threads passes this to
    :func:`restore_autocast` in each worker so that the workers compute as the caller does.
    """
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


def restore_autocast(device_type: str, state: tuple[bool, torch.dtype]) -> contextlib.AbstractContextManager:
    """A context that applies an :func:`autocast_state` in the current thread."""
    enabled, dtype = state
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)
