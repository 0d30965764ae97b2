"""Multi-task architectures over any registry backbone: hard, soft, cross-stitch and MMoE.

Every model maps a batch ``x`` to a dict ``task name -> output`` and says which of its
parameters are *shared* between tasks (:meth:`MultiTaskModel.shared_parameters`), so that loss
weighting methods that need per-task gradients (PCGrad, MGDA, CAGrad, GradNorm) compute them over
the shared parameters only.

- :class:`SingleTask`: one independent backbone per task (the single-task baseline).
- :class:`HardSharing`: one shared trunk, one head per task (Caruana 1997).
- :class:`SoftSharing`: one column per task tied by an L2 penalty (Duong et al. 2015).
- :class:`CrossStitch`: columns mixed by learned cross-stitch units (Misra et al. 2016).
- :class:`MMoE`: shared experts mixed by one softmax gate per task (Ma et al. 2018).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mtl.backbones import create_backbone
from mtl.errors import ConfigError
from mtl.multitask.tasks import TaskSpec

__all__ = [
    "ARCHITECTURES",
    "CrossStitch",
    "HardSharing",
    "MMoE",
    "MultiTaskModel",
    "SingleTask",
    "SoftSharing",
    "build_model",
    "make_trunk",
]

ARCHITECTURES: tuple[str, ...] = ("single", "hard", "soft", "crossstitch", "mmoe")
"""Names accepted by :func:`build_model` (and ``mtlmeta multitask --arch``)."""

TIE_MODES: tuple[str, ...] = ("pairwise", "mean")
"""Soft-sharing penalties: all pairs of columns, or every column to the columns' mean."""


def make_trunk(backbone: str, backbone_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """A headless registry backbone (``create_backbone(backbone, num_classes=None, **kwargs)``).

    Heads come from the task specs, so ``backbone_kwargs`` may not set ``num_classes``.
    """
    kwargs = dict(backbone_kwargs or {})
    if "num_classes" in kwargs:
        raise ConfigError("backbone_kwargs may not set num_classes: each task's head size comes from its TaskSpec")
    trunk = create_backbone(backbone, num_classes=None, **kwargs)
    if not isinstance(getattr(trunk, "out_features", None), int):
        raise ConfigError(f"backbone {backbone!r} does not report out_features; multi-task models need it")
    return trunk


def _make_head(in_features: int, out_features: int, hidden: int | None) -> nn.Module:
    if not hidden:
        return nn.Linear(in_features, out_features)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))


def _last_layer_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters of the last registered sub-module whose weight is a matrix or a kernel."""
    last: list[nn.Parameter] = []
    for sub in module.modules():
        own = list(sub.parameters(recurse=False))
        if any(p.dim() >= 2 for p in own):
            last = own
    return last or list(module.parameters())


def _check_tasks(tasks: Sequence[TaskSpec]) -> list[TaskSpec]:
    tasks = list(tasks)
    if not tasks:
        raise ConfigError("a multi-task model needs at least one task")
    for t in tasks:
        if not isinstance(t, TaskSpec):
            raise ConfigError(f"tasks must be TaskSpec objects, got {type(t).__name__}")
    names = [t.name for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"task names must be unique; repeated: {dup}")
    return tasks


class MultiTaskModel(nn.Module):
    """Base class: ``forward(x) -> {task: output}`` plus the parameter split weighting methods need.

    Subclasses set ``self.heads`` (an ``nn.ModuleDict`` task -> head) and override
    :meth:`shared_parameters`; :meth:`regularization` adds a term to the training loss (soft
    sharing's penalty).
    """

    arch: str = "base"

    def __init__(self, tasks: Sequence[TaskSpec]) -> None:
        super().__init__()
        self.tasks: list[TaskSpec] = _check_tasks(tasks)
        self.heads = nn.ModuleDict()

    @property
    def task_names(self) -> list[str]:
        """Task names in declaration order."""
        return [t.name for t in self.tasks]

    @property
    def task_outputs(self) -> dict[str, int]:
        """Output size of each task's head."""
        out = {}
        for name, head in self.heads.items():
            last = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
            out[name] = int(last.out_features)
        return out

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss depends on (none for independent columns)."""
        return []

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """GradNorm's ``W`` (Chen et al. 2018): the last shared layer (default: all shared parameters)."""
        return self.shared_parameters()

    def task_specific_parameters(self) -> list[nn.Parameter]:
        """All parameters that are not shared."""
        shared = {id(p) for p in self.shared_parameters()}
        return [p for p in self.parameters() if id(p) not in shared]

    def regularization(self) -> torch.Tensor | None:
        """An extra training-loss term (``None`` when the architecture has none)."""
        return None

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary: architecture, tasks, parameter counts."""
        return {
            "arch": self.arch,
            "tasks": self.task_outputs,
            "parameters": sum(p.numel() for p in self.parameters()),
            "shared_parameters": sum(p.numel() for p in self.shared_parameters()),
        }


class HardSharing(MultiTaskModel):
    """Hard parameter sharing: one shared trunk and one head per task (Caruana 1997; Ruder 2017).

    Args:
        tasks: the task specs (each gives its head's output size).
        backbone: a registry name (``mlp``, ``conv4``, ``resnet12``, ...).
        backbone_kwargs: keyword arguments of the backbone (not ``num_classes``).
        head_hidden: ``None``: linear heads; ``h``: a ``Linear-ReLU-Linear`` tower of width ``h``.
    """

    arch = "hard"

    def __init__(self, tasks: Sequence[TaskSpec], backbone: str = "conv4",
                 backbone_kwargs: Mapping[str, Any] | None = None, head_hidden: int | None = None) -> None:
        super().__init__(tasks)
        self.trunk = make_trunk(backbone, backbone_kwargs)
        for t in self.tasks:
            self.heads[t.name] = _make_head(self.trunk.out_features, t.num_outputs, head_hidden)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Shared features, then every head."""
        feats = self.trunk(x)
        return {name: head(feats) for name, head in self.heads.items()}

    def shared_parameters(self) -> list[nn.Parameter]:
        """The trunk."""
        return list(self.trunk.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The trunk's last layer."""
        return _last_layer_parameters(self.trunk)


class SingleTask(MultiTaskModel):
    """One independent backbone column and head per task: the single-task baseline.

    Training it with the sum of the task losses is the same as training each task alone on the
    same batches (the columns share no parameter), which is how multi-task papers such as
    Misra et al. 2016 and Ma et al. 2018 define the single-task reference.
    """

    arch = "single"

    def __init__(self, tasks: Sequence[TaskSpec], backbone: str = "conv4",
                 backbone_kwargs: Mapping[str, Any] | None = None, head_hidden: int | None = None) -> None:
        super().__init__(tasks)
        self.columns = nn.ModuleDict({t.name: make_trunk(backbone, backbone_kwargs) for t in self.tasks})
        for t in self.tasks:
            self.heads[t.name] = _make_head(self.columns[t.name].out_features, t.num_outputs, head_hidden)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each task through its own column and head."""
        return {name: self.heads[name](self.columns[name](x)) for name in self.task_names}


class SoftSharing(SingleTask):
    """Soft parameter sharing: one column per task, tied by an L2 penalty (Duong et al. 2015; Ruder 2017).

    The penalty on the tied parameters ``theta_t`` (one copy per column) is

    - ``tie="pairwise"``: ``lambda * sum_{i<j} ||theta_i - theta_j||^2``;
    - ``tie="mean"``: ``lambda * sum_i ||theta_i - mean_j theta_j||^2``

    (the first is ``T`` times the second for ``T`` tasks). ``lambda = 0`` leaves the columns
    independent; a very large ``lambda`` drives them to one shared network.

    Args:
        tasks: as for :class:`HardSharing`.
        backbone: as for :class:`HardSharing`.
        backbone_kwargs: as for :class:`HardSharing`.
        head_hidden: as for :class:`HardSharing`.
        strength: ``lambda >= 0``.
        tie: ``"pairwise"`` or ``"mean"``.
        tied_layers: regular expression(s) searched in the column's parameter names (for example
            ``features.block1.conv.weight``); default ``^features\\.``: the whole trunk. Heads are
            never tied (their sizes differ between tasks).
    """

    arch = "soft"

    def __init__(self, tasks: Sequence[TaskSpec], backbone: str = "conv4",
                 backbone_kwargs: Mapping[str, Any] | None = None, head_hidden: int | None = None,
                 strength: float = 1e-2, tie: str = "mean",
                 tied_layers: str | Sequence[str] = r"^features\.") -> None:
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
                or strength < 0:
            raise ConfigError(f"soft sharing lambda must be a finite number >= 0, got {strength!r}")
        if tie not in TIE_MODES:
            raise ConfigError(f"tie must be one of {', '.join(TIE_MODES)}, got {tie!r}")
        super().__init__(tasks, backbone, backbone_kwargs, head_hidden)
        self.strength = float(strength)
        self.tie = tie
        patterns = [tied_layers] if isinstance(tied_layers, str) else list(tied_layers)
        compiled = []
        for pat in patterns:
            try:
                compiled.append(re.compile(pat))
            except re.error as exc:
                raise ConfigError(f"tied_layers {pat!r} is not a valid regular expression ({exc})") from None
        first = self.columns[self.task_names[0]]
        names = [n for n, _ in first.named_parameters() if any(r.search(n) for r in compiled)]
        if not names:
            examples = ", ".join(n for n, _ in list(first.named_parameters())[:3])
            raise ConfigError(f"tied_layers {patterns} match no parameter of the backbone; names look like {examples}")
        self.tied_layers = patterns
        self.tied_names: list[str] = names

    def _tied_stacks(self) -> list[torch.Tensor]:
        params = [dict(self.columns[name].named_parameters()) for name in self.task_names]
        return [torch.stack([p[n] for p in params]) for n in self.tied_names]

    def penalty(self) -> torch.Tensor:
        """The unscaled penalty (sum over tied parameters, see the class docstring)."""
        stacks = self._tied_stacks()
        total = sum((s - s.mean(0, keepdim=True)).pow(2).sum() for s in stacks)
        if self.tie == "pairwise":
            total = total * len(self.task_names)
        return total  # type: ignore[return-value]

    def regularization(self) -> torch.Tensor | None:
        """``lambda * penalty()``, or ``None`` when ``lambda == 0`` or there is one task."""
        if self.strength == 0 or len(self.task_names) < 2:
            return None
        return self.strength * self.penalty()

    @torch.no_grad()
    def column_distance(self) -> float:
        """Root of ``sum_i ||theta_i - mean theta||^2`` over the tied parameters (0: identical columns)."""
        return float(sum((s - s.mean(0, keepdim=True)).pow(2).sum() for s in self._tied_stacks())) ** 0.5


def _stage_names(features: nn.Module) -> list[list[str]] | None:
    """Split a sequential trunk after each child with parameters (parameter-free children join the stage)."""
    if not isinstance(features, nn.Sequential):
        return None
    stages: list[list[str]] = []
    for name, child in features.named_children():
        has_params = any(True for _ in child.parameters())
        if has_params or not stages:
            stages.append([name])
        else:
            stages[-1].append(name)
    # a leading parameter-free child (e.g. Flatten) opens a stage that the next layer joins
    if len(stages) > 1 and not any(True for n in stages[0] for _ in features.get_submodule(n).parameters()):
        stages[1] = stages[0] + stages[1]
        stages.pop(0)
    return stages


class CrossStitch(MultiTaskModel):
    """Cross-stitch networks (Misra et al. 2016): one column per task, mixed after every stage.

    After each stage ``s`` of the columns (a layer with parameters plus the parameter-free
    layers after it, e.g. one conv block of ``conv4``), the activations ``h_t`` of the ``T``
    columns are replaced by ``sum_u alpha^s_{t,u} h_u``: a learned ``T x T`` cross-stitch unit,
    initialised to ``init_self`` on the diagonal and ``(1 - init_self) / (T - 1)`` elsewhere
    (Misra et al. use 0.9 / 0.1 for two tasks). A non-sequential trunk gets one unit at its output.
    """

    arch = "crossstitch"

    def __init__(self, tasks: Sequence[TaskSpec], backbone: str = "conv4",
                 backbone_kwargs: Mapping[str, Any] | None = None, head_hidden: int | None = None,
                 init_self: float = 0.9) -> None:
        if isinstance(init_self, bool) or not isinstance(init_self, (int, float)) or not 0.0 <= init_self <= 1.0:
            raise ConfigError(f"cross-stitch init_self must be a number in [0, 1], got {init_self!r}")
        super().__init__(tasks)
        self.columns = nn.ModuleDict({t.name: make_trunk(backbone, backbone_kwargs) for t in self.tasks})
        first = self.columns[self.task_names[0]]
        self._stages = _stage_names(first.features) if hasattr(first, "features") else None
        n_units = len(self._stages) if self._stages else 1
        n = len(self.tasks)
        off = (1.0 - init_self) / (n - 1) if n > 1 else 0.0
        init = torch.full((n, n), off) + torch.eye(n) * (init_self - off if n > 1 else 1.0 - off)
        self.stitches = nn.ParameterList([nn.Parameter(init.clone()) for _ in range(n_units)])
        for t in self.tasks:
            self.heads[t.name] = _make_head(first.out_features, t.num_outputs, head_hidden)

    @staticmethod
    def _mix(alpha: torch.Tensor, hs: list[torch.Tensor]) -> list[torch.Tensor]:
        mixed = torch.tensordot(alpha, torch.stack(hs), dims=([1], [0]))
        return list(mixed.unbind(0))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Columns stage by stage with cross-stitch mixing, then the heads."""
        cols = [self.columns[n] for n in self.task_names]
        if hasattr(cols[0], "check_input") and tuple(x.shape[1:]) != tuple(getattr(cols[0], "input_shape", ())):
            cols[0].check_input(x)
        hs = [x] * len(cols)
        if self._stages is None:
            hs = self._mix(self.stitches[0], [c(h) for c, h in zip(cols, hs)])
        else:
            for unit, names in zip(self.stitches, self._stages):
                outs = []
                for col, h in zip(cols, hs):
                    for name in names:
                        h = col.features.get_submodule(name)(h)
                    outs.append(h)
                hs = self._mix(unit, outs)
        return {name: self.heads[name](h) for name, h in zip(self.task_names, hs)}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Columns and cross-stitch units: every task's loss reaches all of them through the units."""
        if len(self.tasks) < 2:
            return []
        return list(self.columns.parameters()) + list(self.stitches.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last layer of every column."""
        if len(self.tasks) < 2:
            return []
        return [p for c in self.columns.values() for p in _last_layer_parameters(c)]


class MMoE(MultiTaskModel):
    """Multi-gate Mixture-of-Experts (Ma et al. 2018).

    ``num_experts`` copies of the backbone are shared by all tasks; task ``t`` reads
    ``f_t(x) = sum_e g_t(x)_e * expert_e(x)`` with its own gate ``g_t(x) = softmax(W_t x)`` on
    the flattened input, followed by its head (a "tower" when ``head_hidden`` is set).
    """

    arch = "mmoe"

    def __init__(self, tasks: Sequence[TaskSpec], backbone: str = "conv4",
                 backbone_kwargs: Mapping[str, Any] | None = None, head_hidden: int | None = None,
                 num_experts: int = 4) -> None:
        if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
            raise ConfigError(f"num_experts must be a positive integer, got {num_experts!r}")
        super().__init__(tasks)
        self.experts = nn.ModuleList([make_trunk(backbone, backbone_kwargs) for _ in range(num_experts)])
        first = self.experts[0]
        gate_in = math.prod(getattr(first, "input_shape", ()) or (0,))
        if gate_in < 1:
            raise ConfigError(f"backbone {backbone!r} does not declare input_shape; MMoE gates need it")
        self.gates = nn.ModuleDict({t.name: nn.Linear(gate_in, num_experts) for t in self.tasks})
        for t in self.tasks:
            self.heads[t.name] = _make_head(first.out_features, t.num_outputs, head_hidden)

    def gate_weights(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each task's softmax gate ``[B, num_experts]``."""
        flat = x.flatten(1)
        return {name: torch.softmax(gate(flat), dim=-1) for name, gate in self.gates.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Experts once, then one gated mixture and head per task."""
        feats = torch.stack([e(x) for e in self.experts], dim=1)
        gates = self.gate_weights(x)
        return {name: self.heads[name]((gates[name].unsqueeze(-1) * feats).sum(1)) for name in self.task_names}

    def shared_parameters(self) -> list[nn.Parameter]:
        """The experts (gates and heads are task-specific)."""
        return list(self.experts.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last layer of every expert."""
        return [p for e in self.experts for p in _last_layer_parameters(e)]


_ARCH_OPTIONS: dict[str, tuple[type[MultiTaskModel], tuple[str, ...]]] = {
    "single": (SingleTask, ()),
    "hard": (HardSharing, ()),
    "soft": (SoftSharing, ("strength", "tie", "tied_layers")),
    "crossstitch": (CrossStitch, ("init_self",)),
    "mmoe": (MMoE, ("num_experts",)),
}


def build_model(arch: str, tasks: Sequence[TaskSpec], backbone: str = "conv4",
                backbone_kwargs: Mapping[str, Any] | None = None, head_hidden: int | None = None,
                **options: Any) -> MultiTaskModel:
    """Build ``arch`` (one of :data:`ARCHITECTURES`) over a registry backbone.

    ``options`` are the architecture's own settings: ``strength``, ``tie``, ``tied_layers``
    (soft sharing, Duong et al. 2015), ``init_self`` (cross-stitch, Misra et al. 2016),
    ``num_experts`` (MMoE, Ma et al. 2018). Options of other architectures are refused.
    """
    if arch not in _ARCH_OPTIONS:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    cls, allowed = _ARCH_OPTIONS[arch]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ConfigError(f"architecture {arch!r} does not take {bad}; it takes {list(allowed) or 'no options'}")
    return cls(tasks, backbone, backbone_kwargs, head_hidden, **options)
