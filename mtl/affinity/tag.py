"""Inter-task affinity by lookahead during joint training (Fifty et al. 2021, "TAG").

At a training step ``t`` with batch ``X^t``, shared parameters ``theta_s`` and task-specific
parameters ``theta_j``, the affinity of task ``i`` onto task ``j`` is the relative change of
``j``'s loss after one lookahead SGD step along task ``i``'s gradient on the shared parameters only:

    ``theta_s|i = theta_s - eta * grad_{theta_s} L_i(X^t)``
    ``Z^t[i, j] = 1 - L_j(X^t; theta_s|i, theta_j) / L_j(X^t; theta_s, theta_j)``

``Z[i, j] > 0``: a step for ``i`` lowers ``j``'s loss (``i`` helps ``j``); ``< 0``: it raises it.
The diagonal is each task's own relative improvement. The affinity matrix is the average of
``Z^t`` over the probed steps (every ``every``-th step of training). Probing changes nothing in
the training run: parameters and normalisation buffers are restored after each lookahead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mtl.errors import ConfigError
from mtl.multitask.architectures import MultiTaskModel
from mtl.multitask.tasks import MultiTaskData, TaskSpec, masked_task_loss
from mtl.multitask.trainer import MultiTaskConfig, MultiTaskTrainer
from mtl.multitask.weighting import Weighting

__all__ = ["AffinityTrainer", "TaskAffinity", "lookahead_affinity", "tag_affinity"]


@dataclass
class TaskAffinity:
    """An inter-task affinity matrix: ``matrix[i][j]`` = effect of task ``i`` (row) on task ``j`` (column).

    ``history`` holds ``(step, matrix)`` of every probe (TAG) or is empty (transfer matrices);
    ``info`` records how it was measured.
    """

    task_names: list[str]
    matrix: list[list[float]]
    history: list[tuple[int, list[list[float]]]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def value(self, source: str, target: str) -> float:
        """``matrix[source][target]`` by task names."""
        return self.matrix[self.task_names.index(source)][self.task_names.index(target)]

    def symmetric(self) -> list[list[float]]:
        """``(A + A^T) / 2``: the mutual affinity of each pair (the diagonal unchanged)."""
        n = len(self.task_names)
        return [[(self.matrix[i][j] + self.matrix[j][i]) / 2 for j in range(n)] for i in range(n)]

    def ranked_pairs(self) -> list[tuple[str, str, float]]:
        """Unordered task pairs sorted by mutual affinity, highest first."""
        sym = self.symmetric()
        n = len(self.task_names)
        pairs = [(self.task_names[i], self.task_names[j], sym[i][j]) for i in range(n) for j in range(i + 1, n)]
        return sorted(pairs, key=lambda p: -p[2] if math.isfinite(p[2]) else math.inf)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (NaN becomes ``None``)."""
        def clean(m: list[list[float]]) -> list[list[float | None]]:
            return [[v if math.isfinite(v) else None for v in row] for row in m]
        return {"task_names": self.task_names, "matrix": clean(self.matrix),
                "ranked_pairs": [[a, b, v] for a, b, v in self.ranked_pairs()],
                "history": [{"step": s, "matrix": clean(m)} for s, m in self.history], "info": self.info}


def _task_losses(model: nn.Module, tasks: Sequence[TaskSpec], x: torch.Tensor, targets: dict[str, torch.Tensor],
                 masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    outputs = model(x)
    losses = {}
    for t in tasks:
        loss, count = masked_task_loss(t, outputs[t.name], targets[t.name], masks.get(t.name))
        if count:
            losses[t.name] = loss
    return losses


def lookahead_affinity(model: MultiTaskModel, tasks: Sequence[TaskSpec], x: torch.Tensor,
                       targets: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None = None,
                       lr: float = 1e-3) -> torch.Tensor:
    """One lookahead probe of Fifty et al. (2021): ``Z[i, j] = 1 - L_j(theta_s|i) / L_j(theta_s)`` on one batch.

    ``theta_s|i = theta_s - lr * grad_{theta_s} L_i`` moves the model's shared parameters
    (:meth:`~mtl.multitask.architectures.MultiTaskModel.shared_parameters`) only. All losses are
    computed in the model's current mode on the same batch; parameters, gradients and buffers
    (e.g. batch-norm statistics) are left as they were. Entries involving a task without a label
    in the batch, or with a zero loss, are NaN.

    Returns:
        ``[T, T]`` tensor, rows = the task whose gradient is followed, columns = the task measured.
    """
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lookahead lr must be a finite number > 0, got {lr!r}")
    shared = [p for p in model.shared_parameters() if p.requires_grad]
    if not shared:
        raise ConfigError(f"model {type(model).__name__} has no trainable shared parameters; lookahead affinity "
                          "needs a shared trunk (e.g. --arch hard)")
    masks = masks or {}
    names = [t.name for t in tasks]
    n = len(names)
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    result = torch.full((n, n), math.nan)
    try:
        losses = _task_losses(model, tasks, x, targets, masks)
        before = {k: float(v.detach()) for k, v in losses.items()}
        grads: dict[str, list[torch.Tensor]] = {}
        for name, loss in losses.items():
            g = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
            grads[name] = [gi if gi is not None else torch.zeros_like(p) for gi, p in zip(g, shared)]
        del losses
        saved = [p.detach().clone() for p in shared]
        with torch.no_grad():
            for i, src in enumerate(names):
                if src not in grads:
                    continue
                for p, g in zip(shared, grads[src]):
                    p.sub_(lr * g)
                after = _task_losses(model, tasks, x, targets, masks)
                for p, s in zip(shared, saved):
                    p.copy_(s)
                for j, dst in enumerate(names):
                    if dst in after and before.get(dst, 0.0) > 0:
                        result[i, j] = 1.0 - float(after[dst]) / before[dst]
    finally:
        with torch.no_grad():
            for b, v in buffers:
                b.copy_(v)
    return result


class AffinityTrainer(MultiTaskTrainer):
    """:class:`~mtl.multitask.trainer.MultiTaskTrainer` that measures TAG affinities while it trains.

    Before every ``every``-th update it runs :func:`lookahead_affinity` on that update's batch
    (Fifty et al. 2021), with step size ``lookahead_lr`` (default: the training learning rate,
    as in the paper's SGD formulation). The running average is :meth:`affinity`. Training itself
    is exactly that of the parent class.

    The other arguments (``model``, ``tasks``, ``train``, ``val``, ``weighting``, ``config``,
    ``out_dir``, ``device``) are those of :class:`~mtl.multitask.trainer.MultiTaskTrainer`.

    Args:
        every: probe every this many steps (``>= 1``).
        lookahead_lr: the lookahead SGD step size ``eta``.
    """

    def __init__(self, model: MultiTaskModel, tasks: Sequence[TaskSpec], train: MultiTaskData,
                 val: MultiTaskData | None = None, weighting: Weighting | str = "equal",
                 config: MultiTaskConfig | None = None, out_dir: Any = None, device: torch.device | str = "cpu",
                 every: int = 1, lookahead_lr: float | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"every must be a positive integer, got {every!r}")
        super().__init__(model, tasks, train, val, weighting, config, out_dir, device)
        if not [p for p in self.model.shared_parameters() if p.requires_grad]:
            raise ConfigError(f"architecture {getattr(model, 'arch', type(model).__name__)!r} has no shared "
                              "parameters; TAG affinity needs a shared trunk (use hard sharing or MMoE)")
        self.every = every
        self.lookahead_lr = float(self.config.lr if lookahead_lr is None else lookahead_lr)
        if not (math.isfinite(self.lookahead_lr) and self.lookahead_lr > 0):
            raise ConfigError(f"lookahead_lr must be a finite number > 0, got {lookahead_lr!r}")
        n = len(self.tasks)
        self._sum = torch.zeros(n, n, dtype=torch.float64)
        self._count = torch.zeros(n, n, dtype=torch.float64)
        self.history: list[tuple[int, list[list[float]]]] = []

    def train_step(self, index: torch.Tensor) -> dict[str, float] | None:
        """Probe the affinities on this batch (every ``every`` steps), then do the normal update."""
        if self.step % self.every == 0:
            self.model.train()
            x, targets, masks = self.train_data.batch(index, self.device)
            z = lookahead_affinity(self.model, self.tasks, x, targets, masks, self.lookahead_lr).double()
            seen = torch.isfinite(z)
            self._sum += torch.where(seen, z, torch.zeros_like(z))
            self._count += seen.double()
            self.history.append((self.step, z.tolist()))
        return super().train_step(index)

    def affinity(self) -> TaskAffinity:
        """The average of the probes so far (NaN where a pair was never measured)."""
        mean = torch.where(self._count > 0, self._sum / self._count.clamp_min(1), torch.full_like(self._sum, math.nan))
        return TaskAffinity([t.name for t in self.tasks], mean.tolist(), list(self.history),
                            {"method": "tag", "lookahead_lr": self.lookahead_lr, "every": self.every,
                             "probes": len(self.history),
                             "definition": "Z[i][j] = 1 - L_j(after a lookahead SGD step on task i's shared-parameter "
                                           "gradient) / L_j(before), averaged over probed training steps"})


def tag_affinity(problem: Any, backbone: str, backbone_kwargs: dict[str, Any] | None = None,
                 config: MultiTaskConfig | None = None, head_hidden: int | None = None, every: int = 1,
                 lookahead_lr: float | None = None, device: torch.device | str = "cpu") -> tuple[TaskAffinity, dict]:
    """Train one hard-shared network on all tasks of ``problem`` and measure TAG affinities (Fifty et al. 2021).

    ``problem`` is a :class:`~mtl.multitask.data.MultiTaskProblem`; the network is a
    :class:`~mtl.multitask.architectures.HardSharing` over ``backbone`` trained with equal loss
    weights (seeded with ``config.seed``). Returns the averaged affinities and the training summary.
    """
    from mtl.multitask.architectures import HardSharing

    cfg = config or MultiTaskConfig()
    torch.manual_seed(cfg.seed)
    model = HardSharing(problem.tasks, backbone, backbone_kwargs, head_hidden)
    trainer = AffinityTrainer(model, problem.tasks, problem.train, None, "equal", cfg, None, device, every,
                              lookahead_lr)
    summary = trainer.fit()
    affinity = trainer.affinity()
    affinity.info.update({"dataset": problem.name, "backbone": backbone, "backbone_kwargs": dict(backbone_kwargs or {}),
                          "head_hidden": head_hidden, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                          "lr": cfg.lr, "seed": cfg.seed, "steps": summary["steps"]})
    return affinity, summary
