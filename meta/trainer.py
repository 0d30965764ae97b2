"""The outer loop shared by every meta-learning algorithm.

:class:`MetaTrainer` draws meta-batches of tasks, steps the meta-optimizer on
``algo.outer_loss``, validates on held-out classes, keeps the best checkpoint, writes a
checkpoint every ``checkpoint_every`` iterations (atomically, with a checksum), logs a CSV and
plots the learning curve. Meta-batch ``i`` is a pure function of ``(seed, i)``, and the
optimizer, scheduler and RNG states are checkpointed, so a resumed run reaches the same result
as an uninterrupted one with the same seed (bit-exact on CPU). ``last.pt`` is written with the
previous good one kept as ``last.prev.pt``; when ``last.pt`` is truncated or corrupted,
:meth:`MetaTrainer.resume` names it in the error (or, with ``fallback=True``, continues from it).

Under ``torchrun`` (see :mod:`mtl.utils.distributed`) the tasks of each meta-batch are split
across the ranks (task ``j`` goes to rank ``j % world``), every rank backpropagates its share of
the mean meta-loss and the meta-gradients are summed by all-reduce, so each update equals the
single-process one with the same meta-batch (up to float rounding); only rank 0 validates and
writes checkpoints and logs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from mtl.errors import ConfigError
from mtl.utils import Budget, CSVLogger, atomic_write_bytes, load_checkpoint, plot_curves
from mtl.utils import distributed as dist_utils
from mtl.utils.precision import autocast, check_precision
from mtl.utils.resumable import ResumableTrainer, config_differences
from mtl.utils.runtime import rng_state, set_rng_state


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
class _Shard:
    """This rank's tasks of a meta-batch."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor


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
    validate_at_start: bool = False  # also validate the starting weights (e.g. --init) as iteration 0
    task_workers: int = 1  # > 1: outer_backward(..., workers=task_workers) runs tasks on threads (MAML family)
    precision: str = "fp32"  # bf16: meta-updates under bfloat16 autocast (mtl.utils.precision); validation fp32
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in checkpoints, compared on resume

    def __post_init__(self) -> None:
        if not (_is_number(self.meta_lr) and self.meta_lr > 0 and math.isfinite(self.meta_lr)):
            raise ConfigError(f"meta_lr must be a finite number > 0, got {self.meta_lr!r}")
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and not (_is_number(self.grad_clip) and self.grad_clip > 0):
            raise ConfigError(f"grad_clip must be a number > 0 or None, got {self.grad_clip!r}")
        if self.schedule not in ("constant", "cosine", "step"):
            raise ConfigError(f"schedule must be constant, cosine or step, got {self.schedule!r}")
        check_precision(self.precision)
        for name in ("validate_every", "validation_tasks", "checkpoint_every", "schedule_iterations", "task_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.snapshot_seconds, (tuple, list)) or not all(
                _is_number(s) and s > 0 for s in self.snapshot_seconds):
            raise ConfigError(f"snapshot_seconds must be numbers > 0, got {self.snapshot_seconds!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _make_scheduler(
    opt: torch.optim.Optimizer, cfg: MetaTrainerConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.schedule_iterations)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.schedule_iterations // 3), gamma=0.5)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


class MetaTrainer(ResumableTrainer):
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

    checkpoint_format = "mtlmeta-meta-trainer-1"
    checkpoint_kind = "meta-training"

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
        if not isinstance(algo, nn.Module) or not callable(getattr(algo, "outer_loss", None)):
            raise ConfigError(f"algo must be a meta-learning module with outer_loss, got {type(algo).__name__}")
        if not callable(train_tasks):
            raise ConfigError(f"train_tasks must be a function index -> batch, got {type(train_tasks).__name__}")
        if val_tasks is not None and not callable(val_tasks):
            raise ConfigError(f"val_tasks must be a function index -> batch or None, got {type(val_tasks).__name__}")
        if not isinstance(config, MetaTrainerConfig):
            raise ConfigError(f"config must be a MetaTrainerConfig, got {type(config).__name__}")
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
        self.is_main = dist_utils.is_main_process()
        self.log = CSVLogger(self.out_dir / "metrics.csv") if self.out_dir and self.is_main else None

    # --- checkpoints -------------------------------------------------------------------------
    def _config_record(self) -> dict[str, Any]:
        record = asdict(self.config)
        for key in ("progress", "snapshot_seconds", "task_workers"):  # how it runs, not what it computes
            record.pop(key, None)
        return record

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: algorithm, optimizer, scheduler, counters, configuration."""
        return {
            "format": self.checkpoint_format,
            "algo": self.algo.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iteration": self.iteration,
            "best_score": self.best_score,
            "best_iteration": self.best_iteration,
            "train_seconds": self.train_seconds,
            "config": self._config_record(),
            "rng": rng_state(self.device),
        }

    def _config_differences(self, mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
        # a setting added after the checkpoint was written counts as its default there
        defaults = {f.name: f.default for f in fields(MetaTrainerConfig) if f.default is not MISSING}
        theirs = {**{k: v for k, v in defaults.items() if k in mine}, **theirs}
        return (config_differences(mine, theirs, ignore=frozenset({"extra"}))
                + config_differences(mine.get("extra", {}), theirs.get("extra", {})))

    def _position(self) -> int:
        return self.iteration

    def _load_state(self, state: dict[str, Any]) -> None:
        self.algo.load_state_dict(state["algo"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.iteration = int(state["iteration"])
        self.best_score = state["best_score"]
        self.best_iteration = state["best_iteration"]
        self.train_seconds = float(state["train_seconds"])
        set_rng_state(state.get("rng"), self.device)

    # --- training ----------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Mean query metrics over the fixed validation tasks."""
        from meta.evaluation import evaluate

        assert self.val_tasks is not None
        return evaluate(self.algo, self.val_tasks, num_tasks=self.config.validation_tasks, progress=False,
                        workers=self.config.task_workers)

    def _score(self, metrics: dict[str, float]) -> float:
        key = "accuracy" if self.higher_is_better else "loss"
        value = metrics.get(key, metrics.get("mse", float("nan")))
        return value if self.higher_is_better else -value

    def _my_tasks(self, batch: TaskBatch) -> tuple[TaskBatch, int, int]:
        """This rank's share of ``batch``, its size and the size of the whole meta-batch."""
        total = int(batch.support_x.shape[0])
        world = dist_utils.world_size()
        if world == 1:
            return batch, total, total
        if total < world:
            raise ConfigError(f"a meta-batch of {total} task(s) cannot be split across {world} processes; "
                              f"use a meta-batch of at least {world} tasks (--meta-batch)")
        index = torch.tensor(dist_utils.shard_indices(total), device=batch.support_x.device)
        pick = [t.index_select(0, index.to(t.device))
                for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y)]
        return _Shard(*pick), len(index), total

    def train_step(self) -> dict[str, float]:
        """One meta-update on meta-batch ``self.iteration``; refuses a non-finite loss.

        Distributed: this rank's tasks only; the update is that of the whole meta-batch.
        """
        batch, mine, total = self._my_tasks(self.train_tasks(self.iteration))
        self.algo.train()
        self.optimizer.zero_grad(set_to_none=True)
        tensors = (batch.support_x.to(self.device), batch.support_y.to(self.device),
                   batch.query_x.to(self.device), batch.query_y.to(self.device))
        # outer_backward back-propagates task by task (same gradients, one task's graph alive at a time).
        split = callable(getattr(self.algo, "outer_backward", None))
        with autocast(self.device, self.config.precision):
            if split:
                workers = {"workers": self.config.task_workers} if self.config.task_workers > 1 else {}
                metrics = self.algo.outer_backward(*tensors, iteration=self.iteration, **workers)
                local_loss = float(metrics.get("objective", metrics["loss"]))
            else:
                loss, metrics = self.algo.outer_loss(*tensors, iteration=self.iteration)
                local_loss = float(loss.detach())
        distributed = mine != total
        if distributed:  # the meta-batch mean of the loss and the metrics, identical on every rank
            keys = sorted(metrics)
            sums = torch.tensor([local_loss, *(float(metrics[k]) for k in keys)], dtype=torch.float64)
            sums = dist_utils.all_reduce_sum(sums * mine) / total
            global_loss = float(sums[0])
            metrics = {k: float(v) for k, v in zip(keys, sums[1:].tolist())}
        else:
            global_loss = local_loss
        if not math.isfinite(global_loss):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"meta-loss became {global_loss} at iteration {self.iteration + 1}; stopped before "
                "updating (lower --inner-lr or the meta learning rate); the last good checkpoint is kept"
            )
        if not split:
            (loss * (mine / total) if distributed else loss).backward()
        elif distributed:  # the gradient of this rank's mean -> of its share of the meta-batch mean
            for p in self.algo.parameters():
                if p.grad is not None:
                    p.grad.mul_(mine / total)
        if distributed:
            dist_utils.all_reduce_gradients(self.algo.parameters())
            dist_utils.average_buffers(self.algo)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.algo.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        return {k: float(v) for k, v in metrics.items()}

    def fit(self, budget: Budget) -> dict[str, Any]:
        """Train until the budget is used up; returns a summary with the best validation score."""
        cfg = self.config
        if not isinstance(budget, Budget):
            raise ConfigError(f"budget must be a Budget, got {type(budget).__name__}")
        self._sync_ranks()
        if self.log is not None:
            self.log.truncate_after(self.iteration if self.iteration > 0 else -1)  # a fresh run drops old rows
        budget.restart()
        bar = tqdm(total=budget.iterations, initial=self.iteration, disable=not (cfg.progress and self.is_main),
                   desc="meta-train", unit="it", dynamic_ncols=True, leave=False)
        window: list[float] = []
        timed = budget.seconds is not None and dist_utils.is_distributed()

        def done() -> bool:  # every rank must stop at the same iteration
            stop = budget.exhausted(self.iteration)
            return dist_utils.any_process(stop) if timed else stop

        finished = done()
        if cfg.validate_at_start and self.iteration == 0 and self.val_tasks is not None and self.is_main:
            start_row: dict[str, Any] = {"iteration": 0, "seconds": 0.0}
            self._validate_into(start_row, bar)
            if self.log is not None:
                self.log.log(start_row)
        try:
            while not finished:
                start = time.perf_counter()
                metrics = self.train_step()  # a non-finite loss raises; last.pt stays the good one
                self.train_seconds += time.perf_counter() - start
                window.append(metrics.get("accuracy", metrics.get("loss", 0.0)))
                row: dict[str, Any] = {"iteration": self.iteration, "seconds": round(self.train_seconds, 3),
                                       **{f"train_{k}": v for k, v in metrics.items()}}
                finished = done()
                if self.val_tasks is not None and self.is_main and (
                    self.iteration % cfg.validate_every == 0 or finished
                ):
                    self._validate_into(row, bar)
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

    def _validate_into(self, row: dict[str, Any], bar: Any) -> None:
        """Validate and add the scores to ``row``; a new best score saves ``best.pt``."""
        val = self.validate()
        row.update({f"val_{k}": v for k, v in val.items() if k in ("accuracy", "loss", "mse")})
        score = self._score(val)
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_iteration = score, self.iteration
            self.save("best.pt")
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.startswith("val_")})

    def _snapshots(self, elapsed: float) -> None:
        """Copy best.pt to best_<s>s.pt once the run's wall time passes each snapshot mark."""
        if self.out_dir is None or not self.is_main:
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
