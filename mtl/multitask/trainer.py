"""Training loop for multi-task models: per-task metrics, validation, checkpoints, CSV log and plots.

:class:`MultiTaskTrainer` trains any :class:`~mtl.multitask.architectures.MultiTaskModel` with
any :class:`~mtl.multitask.weighting.Weighting` on :class:`~mtl.multitask.tasks.MultiTaskData`.
Batch order in epoch ``e`` is a pure function of ``(seed, e)`` and every state that matters
(model, optimizer, weighting, counters, running epoch sums) is checkpointed atomically, so a run
resumed from ``last.pt`` — even one stopped mid-epoch by a budget — continues exactly where the
interrupted one was (bit-exact on CPU); ``last.pt`` keeps the checkpoint it replaces as
``last.prev.pt``, named by the error (or used with ``resume(..., fallback=True)``) when ``last.pt``
turns out truncated or corrupted. Nothing assumes a device: pass ``device="cuda"``, ``"mps"`` or ``"cpu"``.

Under ``torchrun`` (see :mod:`mtl.utils.distributed`) every mini-batch is split across the ranks;
each rank scales its per-task losses by its share of the task's labelled samples, the gradients
are summed by all-reduce, and the update equals the single-process one on the whole mini-batch
(up to float rounding) for the loss-weighting methods whose weights do not depend on the
gradients (equal, fixed, uncertainty, dwa). Batch-norm statistics are per rank (as in plain data
parallelism). Only rank 0 validates and writes checkpoints and logs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from mtl.errors import ConfigError
from mtl.multitask.architectures import MultiTaskModel
from mtl.multitask.tasks import MultiTaskData, TaskSpec, check_names, masked_task_loss, task_metric
from mtl.multitask.weighting import Weighting, make_weighting
from mtl.training import make_optimizer
from mtl.utils import Budget, CSVLogger, load_checkpoint, plot_curves
from mtl.utils import distributed as dist_utils
from mtl.utils.precision import autocast, check_precision
from mtl.utils.resumable import ResumableTrainer, config_differences
from mtl.utils.runtime import rng_state, set_rng_state

__all__ = ["SELECT_BY", "MultiTaskConfig", "MultiTaskTrainer", "NonFiniteLossError", "evaluate_multitask"]

SELECT_BY: tuple[str, ...] = ("loss", "metric", "last")
"""Model selection on validation data: mean task loss, mean signed metric, or the last epoch."""

CHECKPOINT_FORMAT = "mtlmeta-multitask-trainer-1"

DISTRIBUTED_WEIGHTINGS: tuple[str, ...] = ("equal", "fixed", "uncertainty", "dwa")
"""Weightings whose distributed update equals the single-process one (weights independent of gradients)."""


class NonFiniteLossError(ConfigError):
    """A task loss became NaN or infinite; training stopped before the bad update."""


@dataclass
class MultiTaskConfig:
    """Settings of :class:`MultiTaskTrainer`.

    ``select_by``: ``"loss"`` keeps the epoch with the lowest mean validation task loss as
    ``best.pt``, ``"metric"`` the highest mean of ``+accuracy`` / ``-error`` over tasks,
    ``"last"`` does no selection. ``log_every`` adds a CSV row every that many steps (besides the
    row at each epoch end).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    grad_clip: float | None = None
    select_by: str = "loss"
    log_every: int | None = None
    checkpoint_every: int = 1
    eval_batch_size: int = 512
    seed: int = 0
    precision: str = "fp32"  # bf16: forward passes of training under bfloat16 autocast (mtl.utils.precision)
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_precision(self.precision)
        for name in ("epochs", "batch_size", "checkpoint_every", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.log_every is not None and (not isinstance(self.log_every, int) or self.log_every < 1):
            raise ConfigError(f"log_every must be a positive integer or None, got {self.log_every!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0
                and math.isfinite(self.weight_decay)):
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise ConfigError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if self.select_by not in SELECT_BY:
            raise ConfigError(f"select_by must be one of {', '.join(SELECT_BY)}, got {self.select_by!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")


@torch.no_grad()
def evaluate_multitask(model: nn.Module, tasks: Sequence[TaskSpec], data: MultiTaskData, batch_size: int = 512,
                       device: torch.device | str | None = None) -> dict[str, dict[str, float]]:
    """Per-task metric and loss over the labelled samples of ``data`` (eval mode, batched).

    Returns ``{task: {<metric name>: value, "loss": value, "labelled": count}}``.
    """
    if device is None:
        ref = next(model.parameters(), None)
        device = ref.device if ref is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    outs: dict[str, list[torch.Tensor]] = {t.name: [] for t in tasks}
    try:
        for start in range(0, len(data), batch_size):
            pred = model(data.inputs[start:start + batch_size].to(device))
            for t in tasks:
                outs[t.name].append(pred[t.name].float().cpu())
    finally:
        model.train(was_training)
    result: dict[str, dict[str, float]] = {}
    for t in tasks:
        out = torch.cat(outs[t.name]) if outs[t.name] else torch.zeros(0, t.num_outputs)
        target, mask = data.targets[t.name], data.masks.get(t.name)
        value, count = task_metric(t, out, target, mask)
        loss, _ = masked_task_loss(t, out, target, mask) if count else (torch.tensor(math.nan), 0)
        result[t.name] = {t.metric_name: value, "loss": float(loss), "labelled": count}
    return result


class MultiTaskTrainer(ResumableTrainer):
    """Train a multi-task model with a loss weighting; validate, checkpoint, log and plot.

    Implements the joint training of Caruana (1997) with the architectures and weightings of this
    package. Every input is checked up front: the model's heads, the task specs (losses and
    metrics), the data and a fixed weighting must name the same tasks, and every head must fit
    its labels.

    Args:
        model: the multi-task model (its heads define the outputs).
        tasks: the task specs (losses and metrics).
        train: training data.
        val: validation data (per-epoch metrics and model selection), or ``None``.
        weighting: a :class:`Weighting` or a name from :data:`~mtl.multitask.weighting.WEIGHTINGS`.
        config: the training settings.
        out_dir: folder for ``last.pt``, ``best.pt``, ``metrics.csv`` and ``curves.png``
            (``None``: nothing on disk).
        device: where to train.
    """

    checkpoint_format = CHECKPOINT_FORMAT
    checkpoint_kind = "multi-task training"

    def __init__(
        self,
        model: MultiTaskModel,
        tasks: Sequence[TaskSpec],
        train: MultiTaskData,
        val: MultiTaskData | None = None,
        weighting: Weighting | str = "equal",
        config: MultiTaskConfig | None = None,
        out_dir: str | Path | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a MultiTaskModel, got {type(model).__name__}")
        if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Sequence):
            raise ConfigError(f"tasks must be a list of TaskSpec, got {type(tasks).__name__}")
        bad = [t for t in tasks if not isinstance(t, TaskSpec)]
        if bad:
            raise ConfigError(f"tasks must be TaskSpec objects, got a {type(bad[0]).__name__}")
        for what, data in (("train", train), ("val", val)):
            if data is not None and not isinstance(data, MultiTaskData):
                raise ConfigError(f"{what} must be MultiTaskData, got {type(data).__name__}")
        if train is None:
            raise ConfigError("train must be MultiTaskData, got None")
        if config is not None and not isinstance(config, MultiTaskConfig):
            raise ConfigError(f"config must be a MultiTaskConfig, got {type(config).__name__}")
        self.tasks = list(tasks)
        names = [t.name for t in self.tasks]
        if not names:
            raise ConfigError("no tasks given")
        outputs = getattr(model, "task_outputs", None)
        if not isinstance(outputs, dict):
            raise ConfigError(f"model {type(model).__name__} does not report task_outputs; use a MultiTaskModel")
        check_names(names, list(outputs), "the model's heads")
        for t in self.tasks:
            if outputs[t.name] != t.num_outputs:
                raise ConfigError(f"the head of task {t.name!r} has {outputs[t.name]} outputs but its TaskSpec "
                                  f"declares {t.num_outputs}")
        train.check(self.tasks, "training data")
        if len(train) == 0:
            raise ConfigError("the training set is empty")
        if val is not None:
            val.check(self.tasks, "validation data")
        self.config = config or MultiTaskConfig()
        self.weighting = make_weighting(weighting) if isinstance(weighting, str) else weighting
        if not isinstance(self.weighting, Weighting):
            raise ConfigError(f"weighting must be a Weighting or a name, got {type(weighting).__name__}")
        self.weighting.bind(self.tasks)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.weighting.to(self.device)
        self.train_data, self.val_data = train, val
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ConfigError("the model has no trainable parameters")
        groups: list[dict[str, Any]] = [{"params": trainable, "weight_decay": self.config.weight_decay}]
        own = [p for p in self.weighting.parameters() if p.requires_grad]
        if own:
            groups.append({"params": own, "weight_decay": 0.0})
        self.optimizer = make_optimizer(groups, self.config.optimizer, self.config.lr, self.config.weight_decay)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.is_main = dist_utils.is_main_process()
        self.log = CSVLogger(self.out_dir / "metrics.csv", step_key="step") if self.out_dir and self.is_main else None
        self.step = 0
        self.epoch = 0
        self.position = 0
        self.train_seconds = 0.0
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.last_val: dict[str, dict[str, float]] | None = None
        self.best_val: dict[str, dict[str, float]] | None = None
        self._epoch_sums: dict[str, float] = {}
        self._window: dict[str, float] = {}

    # --- checkpoints ---------------------------------------------------------------------------
    def _config_record(self) -> dict[str, Any]:
        record = asdict(self.config)
        record.pop("progress", None)
        if self.config.precision == "fp32":  # the identity of runs made before the option
            record.pop("precision")
        record["tasks"] = {t.name: [t.kind, t.num_outputs, t.loss_name, t.metric_name] for t in self.tasks}
        record["arch"] = getattr(self.model, "arch", type(self.model).__name__)
        record["weighting"] = self.weighting.name
        return record

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: model, optimizer, weighting, counters, configuration."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "weighting": self.weighting.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "epoch_sums": dict(self._epoch_sums),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_val": self.best_val,
            "train_seconds": self.train_seconds,
            "window": dict(self._window),
            "config": self._config_record(),
            "rng": rng_state(self.device),
        }

    def _config_differences(self, mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
        return config_differences(mine, theirs, ignore=frozenset({"epochs"}))  # a run may go on for more epochs

    def _position(self) -> int:
        return self.step

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.weighting.load_state_dict(state["weighting"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])
        self._epoch_sums = {k: float(v) for k, v in state["epoch_sums"].items()}
        self._window = {k: float(v) for k, v in state.get("window", {}).items()}
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.best_val = state.get("best_val")
        self.train_seconds = float(state["train_seconds"])
        set_rng_state(state.get("rng"), self.device)

    def load_best(self) -> bool:
        """Load the model of ``best.pt`` when there is one; returns whether it did."""
        if self.out_dir is None or not (self.out_dir / "best.pt").is_file():
            return False
        state = load_checkpoint(self.out_dir / "best.pt", map_location=self.device)
        self.model.load_state_dict(state["model"])
        return True

    # --- training ------------------------------------------------------------------------------
    def _batch_order(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.train_data), generator=gen)

    def _accumulate(self, sums: dict[str, float], key: str, value: float, weight: float = 1.0) -> None:
        sums[key] = sums.get(key, 0.0) + value * weight
        sums["n:" + key] = sums.get("n:" + key, 0.0) + weight

    @staticmethod
    def _means(sums: dict[str, float]) -> dict[str, float]:
        return {k: v / sums["n:" + k] for k, v in sums.items() if not k.startswith("n:") and sums["n:" + k] > 0}

    def train_step(self, index: torch.Tensor) -> dict[str, float] | None:
        """One update on the samples ``index``; ``None`` when no sample of the batch has any label.

        Distributed: this rank computes the losses of its share of ``index`` only; the update is
        that of the whole batch.
        """
        self.model.train()
        world = dist_utils.world_size()
        mine = index if world == 1 else index[dist_utils.shard_indices(len(index))]
        x, targets, masks = self.train_data.batch(mine, self.device)
        with autocast(self.device, self.config.precision):
            outputs = self.model(x)
        if self.config.precision != "fp32":  # the task losses in float32
            outputs = {name: out.float() for name, out in outputs.items()}
        local: dict[str, tuple[torch.Tensor, int]] = {
            t.name: masked_task_loss(t, outputs[t.name], targets[t.name], masks.get(t.name)) for t in self.tasks}
        if world == 1:
            values = {n: float(loss.detach()) for n, (loss, c) in local.items() if c}
            counts = {n: c for n, (_, c) in local.items() if c}
        else:  # batch-wide counts and mean losses, identical on every rank
            names = [t.name for t in self.tasks]
            sums = torch.tensor([float(local[n][1]) for n in names] +
                                [float(local[n][0].detach()) * local[n][1] if local[n][1] else 0.0 for n in names],
                                dtype=torch.float64)
            sums = dist_utils.all_reduce_sum(sums)
            counts = {n: int(c) for n, c in zip(names, sums[:len(names)].tolist()) if c > 0}
            values = {n: float(sums[len(names) + i]) / counts[n] for i, n in enumerate(names) if n in counts}
        for t in self.tasks:
            if t.name in values and not math.isfinite(values[t.name]):
                raise NonFiniteLossError(
                    f"loss of task {t.name!r} became {values[t.name]} at step {self.step + 1}; stopped "
                    "before updating (lower the learning rate); the last good checkpoint is kept"
                )
        if not values:
            return None
        if world == 1:
            losses = {n: local[n][0] for n in values}
        else:  # world * (this rank's share of the task's labels) * its mean loss: sums to world * batch loss
            losses = {n: local[n][0] * (world * local[n][1] / counts[n]) for n in values}
        extra = self.model.regularization() if hasattr(self.model, "regularization") else None
        self.optimizer.zero_grad(set_to_none=True)
        weights = self.weighting.backward(losses, self.model, extra, self.step)
        if world > 1:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            dist_utils.all_reduce_gradients(params, divisor=float(world))
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.weighting.after_step()
        self.step += 1
        row = {f"train_loss_{n}": v for n, v in values.items()}
        row.update({f"weight_{n}": w for n, w in weights.items()})
        if extra is not None:
            row["regularization"] = float(extra.detach())
        for sums in (self._epoch_sums, self._window):
            for n, v in values.items():
                self._accumulate(sums, f"train_loss_{n}", v, counts[n])
            for n, w in weights.items():
                self._accumulate(sums, f"weight_{n}", w)
            if extra is not None:
                self._accumulate(sums, "regularization", float(extra.detach()))
        return row

    def evaluate(self, data: MultiTaskData) -> dict[str, dict[str, float]]:
        """Per-task metrics on ``data`` (see :func:`evaluate_multitask`)."""
        data.check(self.tasks, "evaluation data")
        return evaluate_multitask(self.model, self.tasks, data, self.config.eval_batch_size, self.device)

    def _score(self, val: dict[str, dict[str, float]]) -> float:
        if self.config.select_by == "metric":
            vals = [(1 if t.higher_is_better else -1) * val[t.name][t.metric_name] for t in self.tasks]
        else:
            vals = [-val[t.name]["loss"] for t in self.tasks]
        vals = [v for v in vals if math.isfinite(v)]
        return sum(vals) / len(vals) if vals else -math.inf

    def _end_epoch(self, bar: tqdm) -> None:
        means = self._means(self._epoch_sums)
        self.weighting.end_epoch({t.name: means.get(f"train_loss_{t.name}", math.nan) for t in self.tasks})
        self.epoch += 1
        self.position = 0
        self._epoch_sums = {}
        row: dict[str, Any] = {"step": self.step, "epoch": self.epoch, "seconds": round(self.train_seconds, 3),
                               **{k: round(v, 6) for k, v in means.items()}}
        if self.val_data is not None and self.is_main:
            val = self.evaluate(self.val_data)
            self.last_val = val
            for t in self.tasks:
                row[f"val_{t.name}_{t.metric_name}"] = val[t.name][t.metric_name]
                row[f"val_{t.name}_loss"] = val[t.name]["loss"]
            score = self._score(val)
            row["val_score"] = score
            if self.config.select_by != "last" and (self.best_score is None or score > self.best_score):
                self.best_score, self.best_epoch, self.best_val = score, self.epoch, val
                self.save("best.pt")
            bar.set_postfix({t.name: f"{val[t.name][t.metric_name]:.3f}" for t in self.tasks})
        self._window = {}
        if self.log is not None:
            self.log.log(row)
        if self.epoch % self.config.checkpoint_every == 0:
            self.save("last.pt")

    def fit(self, budget: Budget | None = None, restore_best: bool = False) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs (or until the budget runs out); returns a summary.

        ``restore_best`` loads ``best.pt`` at the end (when validation selected one).
        """
        cfg = self.config
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigError(f"budget must be a Budget or None, got {type(budget).__name__}")
        budget = budget or Budget(iterations=10**15)
        n = len(self.train_data)
        per_epoch = math.ceil(n / cfg.batch_size)
        self._check_world(n)
        self._sync_ranks()
        if self.log is not None:
            self.log.truncate_after(self.step)  # a fresh run (step 0) drops an old run's rows
        budget.restart()
        timed = budget.seconds is not None and dist_utils.is_distributed()
        bar = tqdm(total=cfg.epochs * per_epoch, initial=min(self.step, cfg.epochs * per_epoch),
                   disable=not (cfg.progress and self.is_main), desc=f"multitask {getattr(self.model, 'arch', '')}",
                   unit="step", dynamic_ncols=True, leave=False)
        stopped = False
        try:
            while self.epoch < cfg.epochs and not stopped:
                order = self._batch_order(self.epoch)
                while self.position < per_epoch:
                    out_of_budget = budget.exhausted(self.step)
                    if dist_utils.any_process(out_of_budget) if timed else out_of_budget:
                        stopped = True
                        break
                    index = order[self.position * cfg.batch_size:(self.position + 1) * cfg.batch_size]
                    start = time.perf_counter()
                    row = self.train_step(index)
                    self.train_seconds += time.perf_counter() - start
                    self.position += 1
                    bar.update(1)
                    if row is not None and cfg.log_every and self.step % cfg.log_every == 0 and self.log is not None:
                        window = self._means(self._window)
                        self.log.log({"step": self.step, "epoch": self.epoch + self.position / per_epoch,
                                      **{k: round(v, 6) for k, v in window.items()}})
                        self._window = {}
                if not stopped:
                    self._end_epoch(bar)
        finally:
            bar.close()
        self.save("last.pt")
        if self.out_dir is not None and self.log is not None:
            self.plot()
        if restore_best and cfg.select_by != "last":
            self.load_best()
        return {
            "epochs": self.epoch,
            "steps": self.step,
            "train_seconds": round(self.train_seconds, 3),
            "stopped_by_budget": stopped,
            "best_epoch": self.best_epoch,
            "restored_best": bool(restore_best and self.best_epoch is not None and self.out_dir is not None),
            "val": self.last_val,
            "best_val": self.best_val,
            "weights": self.weighting.current_weights(),
        }

    def _check_world(self, n: int) -> None:
        """Refuse distributed settings whose update would differ from the single-process one."""
        world = dist_utils.world_size()
        if world == 1:
            return
        name = self.weighting.name
        if name not in DISTRIBUTED_WEIGHTINGS:
            raise ConfigError(f"weighting {name!r} combines per-task gradients and does not run distributed; "
                              f"use one of {', '.join(DISTRIBUTED_WEIGHTINGS)} or a single process")
        bs = self.config.batch_size
        last = n % bs
        if bs < world or 0 < last < world:
            raise ConfigError(f"batch_size {bs} with {n} training samples gives a batch of {last or bs} sample(s), "
                              f"fewer than the {world} processes; choose a batch size so that every batch has at "
                              f"least {world} samples")

    def plot(self) -> Path | None:
        """``curves.png``: per-task training losses, task weights and validation metrics over steps."""
        if self.log is None or self.out_dir is None or not self.log.rows:
            return None
        steps = self.log.column("step")
        series: dict[str, list[float]] = {}
        panels: list[list[str]] = []
        for prefix in ("train_loss_", "weight_"):
            keys = [f"{prefix}{t.name}" for t in self.tasks if f"{prefix}{t.name}" in self.log.columns]
            if keys:
                series.update({k: self.log.column(k) for k in keys})
                panels.append(keys)
        val_keys = [f"val_{t.name}_{t.metric_name}" for t in self.tasks
                    if f"val_{t.name}_{t.metric_name}" in self.log.columns]
        if val_keys:
            series.update({k: self.log.column(k) for k in val_keys})
            panels.append(val_keys)
        if not panels:
            return None
        return plot_curves(self.out_dir / "curves.png", steps, series, xlabel="step", panels=panels,
                           title=f"{getattr(self.model, 'arch', 'multi-task')} / {self.weighting.name}")
