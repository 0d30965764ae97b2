"""Seeds, devices, budgets and output folders shared by every trainer."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; ``deterministic=True`` also asks torch for deterministic kernels."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda[:i]``/``mps`` into a device, failing clearly if it is absent."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was requested but CUDA is not available here")
    if kind == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ConfigError(f"device {device!r} was requested but MPS is not available here")
    return torch.device(name)


CLOCKS = ("wall", "cpu")


@dataclass
class Budget:
    """Stop training after ``seconds`` or ``iterations`` steps, whichever comes first.

    ``clock="wall"`` counts elapsed wall time; ``clock="cpu"`` counts this process's CPU time
    (all its threads), which stays comparable when other jobs share the machine.
    """

    seconds: float | None = None
    iterations: int | None = None
    clock: str = "wall"
    _start: float = field(default=0.0, repr=False)

    def _now(self) -> float:
        return time.process_time() if self.clock == "cpu" else time.perf_counter()

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise ConfigError(f"budget clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")
        self._start = self._now()
        if self.seconds is None and self.iterations is None:
            raise ConfigError("a budget needs seconds or iterations (got neither)")
        if self.seconds is not None and not self.seconds > 0:
            raise ConfigError(f"budget seconds must be > 0, got {self.seconds!r}")
        if self.iterations is not None and (not isinstance(self.iterations, int) or self.iterations < 1):
            raise ConfigError(f"budget iterations must be a positive integer, got {self.iterations!r}")

    def restart(self) -> None:
        """Start the clock now."""
        self._start = self._now()

    def elapsed(self) -> float:
        """Seconds (of the chosen clock) since the clock started."""
        return self._now() - self._start

    def exhausted(self, iteration: int) -> bool:
        """Whether ``iteration`` completed steps (or the elapsed time) use up the budget."""
        if self.iterations is not None and iteration >= self.iterations:
            return True
        return self.seconds is not None and self.elapsed() >= self.seconds


def check_new_output(path: str | os.PathLike | None, overwrite: bool = False, what: str = "output") -> None:
    """Refuse to replace an existing file unless ``overwrite``; nothing is ever deleted silently."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} is a folder; give a file path")
    if p.exists() and not overwrite:
        raise ConfigError(f"{what} {str(p)!r} already exists; choose another path or pass --overwrite")


def prepare_out_dir(path: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> Path:
    """Create the run folder; an existing non-empty one needs ``resume`` or ``overwrite``."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {str(p)!r} exists and is not a folder")
    if p.is_dir() and any(p.iterdir()) and not (resume or overwrite):
        raise ConfigError(
            f"--out {str(p)!r} already holds results; pass --resume to continue that run, "
            "--overwrite to write over it, or choose another folder"
        )
    p.mkdir(parents=True, exist_ok=True)
    return p


def rng_state(device: torch.device) -> dict[str, Any]:
    """The torch RNG states that training may draw from (CPU, and the CUDA device in use), for checkpoints."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda" and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any] | None, device: torch.device) -> None:
    """Restore what :func:`rng_state` returned (missing entries are left alone)."""
    if not state:
        return
    if "cpu" in state:
        torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator(mmap_threshold: int = 32 * 2**20, trim_threshold: int = 2**30) -> bool:
    """Keep freed CPU tensor memory in the process instead of handing it back to the OS (glibc only).

    Training loops allocate and free the same large activation buffers every step. glibc serves
    buffers above its mmap threshold with fresh ``mmap`` pages and returns freed heap memory above
    its trim threshold, so every step pays page faults on first touch (seen as slow ``fill_`` and
    ``copy_`` of large tensors in a profile). Raising both thresholds (``mallopt``) makes such
    buffers reuse warm heap memory. On this project's 2-core CPU the gain was a few percent at
    meta-batch 16 and larger, but noisy, at meta-batch 8 (docs/performance.md). The setting is
    process-wide and keeps freed memory resident, so it is opt-in. Returns whether it applied
    (``False`` where the C library has no ``mallopt``, e.g. macOS, Windows, musl).
    """
    import ctypes
    import ctypes.util

    if not (isinstance(mmap_threshold, int) and isinstance(trim_threshold, int)) or min(mmap_threshold,
                                                                                           trim_threshold) < 0:
        raise ConfigError(f"thresholds must be integers >= 0, got mmap_threshold={mmap_threshold!r}, "
                          f"trim_threshold={trim_threshold!r}")
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    except OSError:
        return False
    if mallopt is None:
        return False
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(min(mmap_threshold, 32 * 2**20)))
    ok_trim = mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(trim_threshold, 2**31 - 1)))
    return bool(ok_mmap) and bool(ok_trim)
