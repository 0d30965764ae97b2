"""Taskonomy-style transfer matrix (Zamir et al. 2018): how well each task's encoder serves every other task.

For every source task ``s`` an encoder (the backbone trunk) is trained on ``s`` alone with all
its training labels. For every target task ``t`` the source encoder is frozen
(``requires_grad_(False)`` and eval mode: its features are computed once) and a new head for
``t`` is trained on a *limited* target set of ``target_samples`` labelled examples. The reference
is the same network trained from scratch (encoder and head) on the same limited set. Both are
selected on ``val_samples`` validation examples (best epoch by validation loss) and scored by
the target task's own loss (cross-entropy or MSE) on the full test split.

Normalisation, per target ``t`` (columns):

    ``gain[s][t] = (loss_scratch(t) - loss_transfer(s -> t)) / loss_scratch(t)``

so ``gain > 0``: the frozen encoder of ``s`` beats training from scratch on the limited data,
``gain = 0``: as good as scratch, ``gain < 0``: worse; ``gain <= 1`` always (1 = zero test loss).
Dividing by the scratch loss puts targets with very different loss scales on one footing, the
role Taskonomy's per-target normalisation plays (Zamir et al. use pairwise win rates and an
analytic hierarchy process; this is the simpler relative-loss variant). The diagonal ``s = t``
is self-transfer (an encoder trained on all of ``t``'s labels), an upper reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from mtl.affinity._fit import fit_select
from mtl.affinity.tag import TaskAffinity
from mtl.errors import ConfigError
from mtl.multitask.architectures import HardSharing, MultiTaskModel
from mtl.multitask.data import MultiTaskProblem
from mtl.multitask.tasks import MultiTaskData, TaskSpec
from mtl.multitask.trainer import MultiTaskConfig, MultiTaskTrainer

__all__ = ["TransferConfig", "TransferMatrix", "freeze", "normalised_gain", "transfer_matrix"]


def normalised_gain(transfer_loss: Sequence[Sequence[float]], scratch_loss: Sequence[float]) -> list[list[float]]:
    """``gain[s][t] = (scratch[t] - transfer[s][t]) / scratch[t]``: the per-target normalisation of this module.

    Raises :class:`ConfigError` for a scratch loss that is not finite and positive.
    """
    n = len(scratch_loss)
    if len(transfer_loss) != n or any(len(row) != n for row in transfer_loss):
        raise ConfigError(f"transfer_loss must be {n} x {n} to match {n} scratch losses")
    for t, base in enumerate(scratch_loss):
        if not (math.isfinite(base) and base > 0):
            raise ConfigError(f"scratch loss of target {t} is {base}; the normalisation needs a finite value > 0")
    return [[(scratch_loss[t] - transfer_loss[s][t]) / scratch_loss[t] for t in range(n)] for s in range(n)]


def freeze(module: nn.Module) -> nn.Module:
    """Freeze an encoder in place: no gradients, eval mode (batch-norm statistics fixed); returns it."""
    module.requires_grad_(False)
    return module.eval()


@dataclass
class TransferConfig:
    """Settings of :func:`transfer_matrix`.

    ``source_epochs``: training of each source encoder on all its labels; ``target_samples`` /
    ``val_samples``: size of the limited target training / validation sets; ``target_epochs``:
    training of transfer heads and of the scratch networks (best epoch on validation loss).
    """

    source_epochs: int = 10
    target_samples: int = 200
    val_samples: int = 200
    target_epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    head_hidden: int | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("source_epochs", "target_samples", "val_samples", "target_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.head_hidden is not None and (not isinstance(self.head_hidden, int) or self.head_hidden < 1):
            raise ConfigError(f"head_hidden must be a positive integer or None, got {self.head_hidden!r}")


@dataclass
class TransferMatrix:
    """Result of :func:`transfer_matrix`: raw test losses / metrics and the normalised gains.

    ``transfer_loss[s][t]``: test loss on target ``t`` of a head on the frozen encoder of ``s``;
    ``scratch_loss[t]``: of the network trained from scratch on the limited target data;
    ``gain``: see :func:`normalised_gain`. Rows are sources, columns targets.
    """

    task_names: list[str]
    transfer_loss: list[list[float]]
    transfer_metric: list[list[float]]
    scratch_loss: list[float]
    scratch_metric: list[float]
    metric_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def gain(self) -> list[list[float]]:
        """The normalised matrix ``(scratch - transfer) / scratch`` per target."""
        return normalised_gain(self.transfer_loss, self.scratch_loss)

    def affinity(self) -> TaskAffinity:
        """The gains as a :class:`~mtl.affinity.tag.TaskAffinity` (row = source, column = target)."""
        return TaskAffinity(list(self.task_names), self.gain, [], {
            "method": "transfer", **self.info,
            "definition": "gain[s][t] = (loss_scratch(t) - loss_transfer(s->t)) / loss_scratch(t), test losses"})

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"task_names": self.task_names, "gain": self.gain, "transfer_loss": self.transfer_loss,
                "transfer_metric": self.transfer_metric, "scratch_loss": self.scratch_loss,
                "scratch_metric": self.scratch_metric, "metric_names": self.metric_names, "info": self.info}


class _FeatureHeads(MultiTaskModel):
    """Heads only, on precomputed features of a frozen encoder."""

    arch = "heads"

    def __init__(self, tasks: Sequence[TaskSpec], in_features: int, head_hidden: int | None) -> None:
        super().__init__(tasks)
        for t in self.tasks:
            self.heads[t.name] = (nn.Linear(in_features, t.num_outputs) if not head_hidden else nn.Sequential(
                nn.Linear(in_features, head_hidden), nn.ReLU(), nn.Linear(head_hidden, t.num_outputs)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every head on the features."""
        return {name: head(x) for name, head in self.heads.items()}


def _only(data: MultiTaskData, name: str, inputs: torch.Tensor | None = None) -> MultiTaskData:
    masks = {name: data.masks[name]} if name in data.masks else {}
    return MultiTaskData(data.inputs if inputs is None else inputs, {name: data.targets[name]}, masks)


def _labelled_subset(data: MultiTaskData, spec: TaskSpec, count: int, seed: int) -> MultiTaskData:
    labelled = torch.nonzero(spec.labelled(data.targets[spec.name], data.masks.get(spec.name))).flatten()
    order = labelled[torch.randperm(len(labelled), generator=torch.Generator().manual_seed(seed))]
    return _only(data, spec.name).select(order[:count])


@torch.no_grad()
def _features(encoder: nn.Module, inputs: torch.Tensor, device: torch.device, batch: int = 512) -> torch.Tensor:
    return torch.cat([encoder(inputs[i:i + batch].to(device)).cpu() for i in range(0, len(inputs), batch)])


def _fit(model: MultiTaskModel, spec: TaskSpec, train: MultiTaskData, val: MultiTaskData | None, epochs: int,
         cfg: TransferConfig, device: torch.device, seed: int) -> MultiTaskTrainer:
    config = MultiTaskConfig(epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed,
                             select_by="loss" if val is not None else "last", progress=False)
    return fit_select(model, [spec], train, val, config, device)[0]


def transfer_matrix(problem: MultiTaskProblem, backbone: str = "mlp", backbone_kwargs: Mapping[str, Any] | None = None,
                    config: TransferConfig | None = None, device: torch.device | str = "cpu") -> TransferMatrix:
    """Measure the transfer matrix of Zamir et al. (2018) between all tasks of ``problem`` (see the module docstring).

    Every network is a :class:`~mtl.multitask.architectures.HardSharing` model with one task over
    the registry ``backbone``. Costs ``2 T`` network trainings plus ``T^2`` head trainings on
    cached features.
    """
    cfg = config or TransferConfig()
    device = torch.device(device)
    tasks = list(problem.tasks)
    names = [t.name for t in tasks]
    n = len(tasks)
    for split, data in (("training", problem.train), ("validation", problem.val), ("test", problem.test)):
        data.check(tasks, f"{split} data")
    limited = {t.name: _labelled_subset(problem.train, t, cfg.target_samples, cfg.seed) for t in tasks}
    small_val = {t.name: _labelled_subset(problem.val, t, cfg.val_samples, cfg.seed + 1) for t in tasks}
    for t in tasks:
        if len(limited[t.name]) < cfg.target_samples:
            raise ConfigError(f"target_samples={cfg.target_samples} but task {t.name!r} has only "
                              f"{len(limited[t.name])} labelled training samples")
    transfer_loss = [[math.nan] * n for _ in range(n)]
    transfer_metric = [[math.nan] * n for _ in range(n)]
    scratch_loss, scratch_metric = [math.nan] * n, [math.nan] * n
    bar = tqdm(total=n * (n + 2), desc="transfer matrix", unit="fit", disable=not cfg.progress, leave=False)
    try:
        for si, src in enumerate(tasks):
            torch.manual_seed(cfg.seed * 1009 + si)
            net = HardSharing([src], backbone, backbone_kwargs, cfg.head_hidden)
            _fit(net, src, _only(problem.train, src.name), None, cfg.source_epochs, cfg, device, cfg.seed)
            bar.update(1)
            encoder = freeze(net.trunk)
            test_feats = _features(encoder, problem.test.inputs, device)
            for ti, tgt in enumerate(tasks):
                feats = {k: _features(encoder, d.inputs, device) for k, d in
                         (("train", limited[tgt.name]), ("val", small_val[tgt.name]))}
                torch.manual_seed(cfg.seed * 1009 + 100 + si * n + ti)
                heads = _FeatureHeads([tgt], int(encoder.out_features), cfg.head_hidden)
                trainer = _fit(heads, tgt, _only(limited[tgt.name], tgt.name, feats["train"]),
                               _only(small_val[tgt.name], tgt.name, feats["val"]), cfg.target_epochs, cfg, device,
                               cfg.seed)
                res = trainer.evaluate(_only(problem.test, tgt.name, test_feats))[tgt.name]
                transfer_loss[si][ti], transfer_metric[si][ti] = res["loss"], res[tgt.metric_name]
                bar.update(1)
        for ti, tgt in enumerate(tasks):
            torch.manual_seed(cfg.seed * 1009 + 50 + ti)
            net = HardSharing([tgt], backbone, backbone_kwargs, cfg.head_hidden)
            trainer = _fit(net, tgt, limited[tgt.name], small_val[tgt.name], cfg.target_epochs, cfg, device,
                           cfg.seed)
            res = trainer.evaluate(_only(problem.test, tgt.name))[tgt.name]
            scratch_loss[ti], scratch_metric[ti] = res["loss"], res[tgt.metric_name]
            bar.update(1)
    finally:
        bar.close()
    info = {"backbone": backbone, "backbone_kwargs": dict(backbone_kwargs or {}), "source_epochs": cfg.source_epochs,
            "target_samples": cfg.target_samples, "val_samples": cfg.val_samples, "target_epochs": cfg.target_epochs,
            "lr": cfg.lr, "batch_size": cfg.batch_size, "head_hidden": cfg.head_hidden, "seed": cfg.seed,
            "dataset": problem.name}
    return TransferMatrix(names, transfer_loss, transfer_metric, scratch_loss, scratch_metric,
                          [t.metric_name for t in tasks], info)
