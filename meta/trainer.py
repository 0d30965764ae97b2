"""The outer loop shared by every meta-learning algorithm.

:class:`MetaTrainer` draws meta-batches of tasks, steps the meta-optimizer on
``algo.outer_loss``, validates on held-out classes, keeps the best checkpoint, writes a
checkpoint every ``checkpoint_every`` iterations (atomically, with a checksum), logs a CSV and
plots the learning curve. Meta-batch ``i`` is a pure function of ``(seed, i)``, and the
optimizer and scheduler states are checkpointed, so a resumed run reaches the same result as
an uninterrupted one with the same seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from mtl.errors import CheckpointError, ConfigError
from mtl.utils import Budget, CSVLogger, atomic_write_bytes, load_checkpoint, plot_curves, save_checkpoint


class TaskBatch(Protocol):
    """A batch of tasks: tensors with a leading task dimension."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor


TaskSource = Callable[[int], TaskBatch]
"""``index -> batch``; the same index always gives the same tasks."""


class NonFiniteLossError(ConfigError):
    """The meta-loss became NaN or infinite; training stopped before the bad update."""


@dataclass
class MetaTrainerConfig:
    """Outer-loop settings (Finn et al. 2017 use Adam with meta_lr 1e-3 on Omniglot)."""

    meta_lr: float = 1e-3
    schedule: str = "constant"  # constant | cosine | step
    schedule_iterations: int = 10_000
    weight_decay: float = 0.0
    grad_clip: float | None = 10.0
    validate_every: int = 100
    validation_tasks: int = 100
    checkpoint_every: int = 100
    snapshot_seconds: tuple[float, ...] = ()  # also keep best_<s>s.pt: the best model within s seconds
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in checkpoints, compared on resume

    def __post_init__(self) -> None:
        if not (self.meta_lr > 0 and math.isfinite(self.meta_lr)):
            raise ConfigError(f"meta_lr must be a finite number > 0, got {self.meta_lr!r}")
        if self.schedule not in ("constant", "cosine", "step"):
            raise ConfigError(f"schedule must be constant, cosine or step, got {self.schedule!r}")
        for name in ("validate_every", "validation_tasks", "checkpoint_every", "schedule_iterations"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _make_scheduler(
    opt: torch.optim.Optimizer, cfg: MetaTrainerConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.schedule_iterations)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.schedule_iterations // 3), gamma=0.5)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


class MetaTrainer:
    """Meta-train ``algo`` on tasks from ``train_tasks``; validate on ``val_tasks``.

    Args:
        algo: an algorithm object of :mod:`meta` (an ``nn.Module`` with ``outer_loss`` and
            ``evaluate_task``).
        train_tasks: ``index -> meta-batch`` for training.
        val_tasks: ``index -> batch`` of validation tasks (held-out classes), or ``None``.
        config: the outer-loop settings.
        out_dir: where ``last.pt``, ``best.pt``, ``metrics.csv`` and ``learning_curve.png`` go
            (``None``: keep nothing on disk).
        device: where to train.
        higher_is_better: ``True`` for accuracy, ``False`` for a validation loss such as MSE.
    """

    def __init__(
        self,
        algo: nn.Module,
        train_tasks: TaskSource,
        val_tasks: TaskSource | None,
        config: MetaTrainerConfig,
        out_dir: str | Path | None = None,
        device: torch.device | str = "cpu",
        higher_is_better: bool = True,
    ) -> None:
        self.algo = algo.to(device)
        self.train_tasks = train_tasks
        self.val_tasks = val_tasks
        self.config = config
        self.device = torch.device(device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.higher_is_better = higher_is_better
        self.optimizer = torch.optim.Adam(
            [p for p in algo.parameters() if p.requires_grad], lr=config.meta_lr,
            weight_decay=config.weight_decay,
        )
        self.scheduler = _make_scheduler(self.optimizer, config)
        self.iteration = 0
        self.best_score: float | None = None
        self.best_iteration: int | None = None
        self.train_seconds = 0.0
        self.log = CSVLogger(self.out_dir / "metrics.csv") if self.out_dir else None

    # --- checkpoints -------------------------------------------------------------------------
    def _config_record(self) -> dict[str, Any]:
        record = asdict(self.config)
        record.pop("progress", None)
        record.pop("snapshot_seconds", None)
        return record

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: algorithm, optimizer, scheduler, counters, configuration."""
        return {
            "format": "mtlmeta-meta-trainer-1",
            "algo": self.algo.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iteration": self.iteration,
            "best_score": self.best_score,
            "best_iteration": self.best_iteration,
            "train_seconds": self.train_seconds,
            "config": self._config_record(),
        }

    def save(self, name: str) -> Path | None:
        """Write ``out_dir/name`` atomically (no-op without ``out_dir``)."""
        if self.out_dir is None:
            return None
        return save_checkpoint(self.out_dir / name, self.state_dict())

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint of the same configuration (anything else is refused)."""
        state = load_checkpoint(path, map_location=self.device)
        if state.get("format") != "mtlmeta-meta-trainer-1":
            raise CheckpointError(f"checkpoint {str(path)!r} is not a meta-training checkpoint")
        mine, theirs = self._config_record(), state.get("config", {})
        diffs = [
            f"{k}: checkpoint {theirs.get(k)!r} vs now {mine.get(k)!r}"
            for k in sorted(set(mine) | set(theirs))
            if k != "extra" and mine.get(k) != theirs.get(k)
        ]
        extra_m, extra_t = mine.get("extra", {}), theirs.get("extra", {})
        diffs += [
            f"{k}: checkpoint {extra_t.get(k)!r} vs now {extra_m.get(k)!r}"
            for k in sorted(set(extra_m) | set(extra_t))
            if extra_m.get(k) != extra_t.get(k)
        ]
        if diffs:
            raise CheckpointError(
                f"cannot resume from {str(path)!r}: its configuration differs ({'; '.join(diffs)})"
            )
        self.algo.load_state_dict(state["algo"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.iteration = int(state["iteration"])
        self.best_score = state["best_score"]
        self.best_iteration = state["best_iteration"]
        self.train_seconds = float(state["train_seconds"])
        if self.log is not None:
            self.log.truncate_after(self.iteration)

    # --- training ----------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Mean query metrics over the fixed validation tasks."""
        from meta.evaluation import evaluate

        assert self.val_tasks is not None
        return evaluate(self.algo, self.val_tasks, num_tasks=self.config.validation_tasks, progress=False)

    def _score(self, metrics: dict[str, float]) -> float:
        key = "accuracy" if self.higher_is_better else "loss"
        value = metrics.get(key, metrics.get("mse", float("nan")))
        return value if self.higher_is_better else -value

    def train_step(self) -> dict[str, float]:
        """One meta-update on meta-batch ``self.iteration``; refuses a non-finite loss."""
        batch = self.train_tasks(self.iteration)
        self.algo.train()
        loss, metrics = self.algo.outer_loss(
            batch.support_x.to(self.device), batch.support_y.to(self.device),
            batch.query_x.to(self.device), batch.query_y.to(self.device), iteration=self.iteration,
        )
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"meta-loss became {loss.item()} at iteration {self.iteration + 1}; stopped before "
                "updating (lower --inner-lr or the meta learning rate); the last good checkpoint is kept"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.algo.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        return {k: float(v) for k, v in metrics.items()}

    def fit(self, budget: Budget) -> dict[str, Any]:
        """Train until the budget is used up; returns a summary with the best validation score."""
        cfg = self.config
        budget.restart()
        bar = tqdm(total=budget.iterations, initial=self.iteration, disable=not cfg.progress,
                   desc="meta-train", unit="it", dynamic_ncols=True, leave=False)
        window: list[float] = []
        try:
            while not budget.exhausted(self.iteration):
                start = time.perf_counter()
                metrics = self.train_step()  # a non-finite loss raises; last.pt stays the good one
                self.train_seconds += time.perf_counter() - start
                window.append(metrics.get("accuracy", metrics.get("loss", 0.0)))
                row: dict[str, Any] = {"iteration": self.iteration, "seconds": round(self.train_seconds, 3),
                                       **{f"train_{k}": v for k, v in metrics.items()}}
                if self.val_tasks is not None and (
                    self.iteration % cfg.validate_every == 0 or budget.exhausted(self.iteration)
                ):
                    val = self.validate()
                    row.update({f"val_{k}": v for k, v in val.items() if k in ("accuracy", "loss", "mse")})
                    score = self._score(val)
                    if self.best_score is None or score > self.best_score:
                        self.best_score, self.best_iteration = score, self.iteration
                        self.save("best.pt")
                    bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.startswith("val_")})
                if self.log is not None:
                    self.log.log(row)
                if self.iteration % cfg.checkpoint_every == 0:
                    self.save("last.pt")
                self._snapshots(budget.elapsed())
                bar.update(1)
        finally:
            bar.close()
        self.save("last.pt")
        if self.log is not None and self.out_dir is not None:
            self.plot()
        return {
            "meta_iterations": self.iteration,
            "train_seconds": self.train_seconds,
            "best_iteration": self.best_iteration,
            "best_val_score": None if self.best_score is None else (
                self.best_score if self.higher_is_better else -self.best_score),
        }

    def _snapshots(self, elapsed: float) -> None:
        """Copy best.pt to best_<s>s.pt once the run's wall time passes each snapshot mark."""
        if self.out_dir is None:
            return
        for mark in self.config.snapshot_seconds:
            target = self.out_dir / f"best_{mark:g}s.pt"
            best = self.out_dir / "best.pt"
            if elapsed >= mark and not target.exists() and best.is_file():
                atomic_write_bytes(target, best.read_bytes())

    def plot(self) -> Path | None:
        """Learning curve: training loss and validation metric against iteration."""
        if self.log is None or self.out_dir is None or not self.log.rows:
            return None
        it = self.log.column("iteration")
        series = {"train_loss": self.log.column("train_loss")}
        val_key = "val_accuracy" if self.higher_is_better else "val_loss"
        if val_key in self.log.columns:
            series[val_key] = self.log.column(val_key)
        return plot_curves(self.out_dir / "learning_curve.png", it, series, title="meta-training")

    def load_best(self) -> None:
        """Load the parameters of ``best.pt`` (when validation ran and an out folder is set)."""
        if self.out_dir is not None and (self.out_dir / "best.pt").is_file():
            state = load_checkpoint(self.out_dir / "best.pt", map_location=self.device)
            self.algo.load_state_dict(state["algo"])
