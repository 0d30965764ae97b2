"""Checkpoint plumbing shared by the training loops (meta-training, multi-task training).

:class:`ResumableTrainer` gives a trainer ``save`` (atomic, ``last.pt`` keeping the checkpoint it
replaces), ``resume`` (refuses a checkpoint of another kind or another configuration, names every
difference, falls back to ``last.prev.pt`` on request) and ``_sync_ranks`` (rank 0's state to every
rank). A trainer supplies its state and its configuration record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtl.errors import CheckpointError
from mtl.utils import distributed as dist_utils
from mtl.utils.checkpoint import load_checkpoint_or_previous, save_checkpoint
from mtl.utils.logging import CSVLogger


def config_differences(mine: dict[str, Any], theirs: dict[str, Any], ignore: frozenset[str] = frozenset(),
                       prefix: str = "") -> list[str]:
    """``"<prefix>key: checkpoint X vs now Y"`` for every key (outside ``ignore``) whose values differ."""
    return [f"{prefix}{k}: checkpoint {theirs.get(k)!r} vs now {mine.get(k)!r}"
            for k in sorted(set(mine) | set(theirs)) if k not in ignore and mine.get(k) != theirs.get(k)]


class ResumableTrainer:
    """Base of trainers that write ``last.pt`` / ``best.pt`` and resume from them.

    Subclasses set ``checkpoint_format`` (stored in every checkpoint) and ``checkpoint_kind``
    (named in errors), and the attributes ``out_dir``, ``is_main``, ``device`` and ``log``; they
    implement :meth:`state_dict`, :meth:`_load_state`, :meth:`_config_record` and
    :meth:`_position` (the step the metrics log is truncated after on resume), and may override
    :meth:`_config_differences` (what counts as another configuration).
    """

    checkpoint_format: str = ""
    checkpoint_kind: str = ""
    out_dir: Path | None
    is_main: bool
    device: torch.device
    log: CSVLogger | None

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (``"format"`` and ``"config"`` included)."""
        raise NotImplementedError

    def _load_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _config_record(self) -> dict[str, Any]:
        raise NotImplementedError

    def _position(self) -> int:
        raise NotImplementedError

    def _config_differences(self, mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
        return config_differences(mine, theirs)

    def save(self, name: str) -> Path | None:
        """Write ``out_dir/name`` atomically with a checksum (no-op without ``out_dir`` or off rank 0).

        ``last.pt`` keeps the checkpoint it replaces as ``last.prev.pt``.
        """
        if self.out_dir is None or not self.is_main:
            return None
        return save_checkpoint(self.out_dir / name, self.state_dict(), keep_previous=name == "last.pt")

    def resume(self, path: str | Path, fallback: bool = False) -> None:
        """Continue from a checkpoint of the same configuration (a different one is refused).

        A truncated or corrupted ``path`` is a :class:`CheckpointError` that names the checkpoint it
        replaced (``last.prev.pt``) when that one is intact; with ``fallback=True`` training
        continues from that previous good checkpoint instead (with a warning).
        """
        state, path = load_checkpoint_or_previous(path, map_location=self.device, fallback=fallback,
                                                  warn=lambda m: print(f"warning: {m}", flush=True))
        if state.get("format") != self.checkpoint_format:
            raise CheckpointError(f"checkpoint {str(path)!r} is not a {self.checkpoint_kind} checkpoint")
        diffs = self._config_differences(self._config_record(), state.get("config", {}))
        if diffs:
            raise CheckpointError(f"cannot resume from {str(path)!r}: its configuration differs ({'; '.join(diffs)})")
        try:
            self._load_state(state)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {str(path)!r} does not fit this model: {str(exc)[:200]}") from exc
        if self.log is not None:
            self.log.truncate_after(self._position())

    def _sync_ranks(self) -> None:
        """Give every rank rank 0's state (e.g. after a resume)."""
        if dist_utils.is_distributed():
            self._load_state(dist_utils.broadcast_state(self.state_dict() if self.is_main else None))
