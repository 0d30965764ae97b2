"""Train a multi-task model with best-epoch selection kept in memory (no files), for the many small fits here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from mtl.multitask.architectures import MultiTaskModel
from mtl.multitask.tasks import MultiTaskData, TaskSpec
from mtl.multitask.trainer import MultiTaskConfig, MultiTaskTrainer


class KeepBestTrainer(MultiTaskTrainer):
    """:class:`~mtl.multitask.trainer.MultiTaskTrainer` whose ``best.pt`` is a copy of the weights in memory.

    Nothing is written to disk; ``fit(restore_best=True)`` restores the weights of the epoch with
    the best validation score (``config.select_by``).
    """

    _best_state: dict[str, torch.Tensor] | None = None

    def save(self, name: str) -> Path | None:
        """Keep the model's weights when ``name`` is ``best.pt``; nothing else is saved."""
        if name == "best.pt":
            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return None

    def load_best(self) -> bool:
        """Restore the kept best weights (if any)."""
        if self._best_state is None:
            return False
        self.model.load_state_dict(self._best_state)
        return True


def fit_select(model: MultiTaskModel, tasks: Sequence[TaskSpec], train: MultiTaskData, val: MultiTaskData | None,
               config: MultiTaskConfig, device: torch.device | str = "cpu") -> tuple[KeepBestTrainer, dict]:
    """Train with equal loss weights; with ``val``, end on the best epoch of ``config.select_by``."""
    trainer = KeepBestTrainer(model, tasks, train, val, "equal", config, None, device)
    summary = trainer.fit()
    if val is not None and config.select_by != "last":
        trainer.load_best()
    return trainer, summary
