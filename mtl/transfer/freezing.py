"""Freezing and unfreezing layers by name, stop-gradients, discriminative rates, gradual unfreezing.

Transferring a network (Yosinski et al. 2014, "How transferable are features in deep neural
networks?") means deciding which layers keep their pre-trained values and which are trained on the
target task. Everything here addresses parameters by their names (``features.block2.conv.weight``,
``head.bias``), with regular expressions, the same way TensorFlow selects variables by scope
(``scope="hidden[123]"``). The per-layer learning rates and the gradual unfreezing schedule are
those of ULMFiT (Howard and Ruder 2018).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mtl.errors import ConfigError

__all__ = [
    "GradualUnfreezing",
    "discriminative_param_groups",
    "freeze",
    "freeze_below",
    "frozen_names",
    "layer_groups",
    "match_names",
    "stop_gradient_after",
    "trainable_names",
    "unfreeze",
]

_BN_HOOK = "_transfer_frozen_bn_hook"


def _compile(pattern: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"pattern must be a non-empty regular expression string, got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None


def _examples(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def match_names(names: Sequence[str], pattern: str, what: str = "parameter") -> list[str]:
    """The names that ``pattern`` finds (``re.search``), in order; a pattern finding none is an error.

    Raises:
        ConfigError: naming the pattern and a few of the available names.
    """
    regex = _compile(pattern)
    found = [n for n in names if regex.search(n)]
    if not found:
        raise ConfigError(f"pattern {pattern!r} matches no {what} name; available: {_examples(list(names))}")
    return found


def _hold_batchnorm_stats(model: nn.Module) -> None:
    """Keep the running statistics of fully frozen BatchNorm layers fixed, even in train mode."""

    def force_eval(module: nn.Module, args: tuple) -> None:
        module.training = False

    for module in model.modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        params = list(module.parameters(recurse=False))
        fully_frozen = bool(params) and not any(p.requires_grad for p in params)
        hook = getattr(module, _BN_HOOK, None)
        if fully_frozen and hook is None:
            setattr(module, _BN_HOOK, module.register_forward_pre_hook(force_eval))
        elif not fully_frozen and hook is not None:
            hook.remove()
            delattr(module, _BN_HOOK)
            module.training = model.training


def freeze(model: nn.Module, pattern: str = ".*", *, batchnorm_stats: bool = True) -> list[str]:
    """Set ``requires_grad=False`` on every parameter whose name matches ``pattern``; returns those names.

    The optimizers built by :func:`mtl.training.train_classifier` take trainable parameters only,
    so frozen ones get no optimizer state. With ``batchnorm_stats`` (default) a BatchNorm layer whose
    parameters are all frozen also stops updating its running mean and variance: it always runs as
    in eval mode, so the restored layer is truly unchanged by training.

    Raises:
        ConfigError: when the pattern is invalid or matches no parameter.
    """
    names = match_names([n for n, _ in model.named_parameters()], pattern)
    chosen = set(names)
    for name, param in model.named_parameters():
        if name in chosen:
            param.requires_grad_(False)
    if batchnorm_stats:
        _hold_batchnorm_stats(model)
    return names


def unfreeze(model: nn.Module, pattern: str = ".*") -> list[str]:
    """Set ``requires_grad=True`` on the parameters matching ``pattern``; returns their names.

    BatchNorm layers with a trainable parameter again update their running statistics.
    """
    names = match_names([n for n, _ in model.named_parameters()], pattern)
    chosen = set(names)
    for name, param in model.named_parameters():
        if name in chosen:
            param.requires_grad_(True)
    _hold_batchnorm_stats(model)
    return names


def frozen_names(model: nn.Module) -> list[str]:
    """Names of the parameters that do not require gradients."""
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that require gradients."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def layer_groups(model: nn.Module, depth: int = 2) -> list[tuple[str, list[str]]]:
    """Parameters grouped into layers, from the input to the output.

    A parameter's layer is the first ``depth`` parts of its name (``features.block2`` for
    ``features.block2.conv.weight``; a shorter name keeps all but its last part, so ``head.weight``
    is in ``head``). Groups come in the order of ``model.named_parameters()``, which for the
    registry backbones is input to output with the head last.
    """
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ConfigError(f"depth must be a positive integer, got {depth!r}")
    groups: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        parts = name.split(".")
        key = ".".join(parts[: min(depth, len(parts) - 1)]) or parts[0]
        groups.setdefault(key, []).append(name)
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no parameters to group")
    return list(groups.items())


def _group_index(groups: list[tuple[str, list[str]]], layer: str) -> int:
    names = [g for g, _ in groups]
    if layer in names:
        return names.index(layer)
    hits = [i for i, g in enumerate(names) if g.endswith("." + layer) or g.split(".")[-1] == layer]
    if len(hits) == 1:
        return hits[0]
    raise ConfigError(f"layer {layer!r} is not one of the model's layers: {', '.join(names)}")


def freeze_below(model: nn.Module, layer: str, *, inclusive: bool = True, depth: int = 2,
                 batchnorm_stats: bool = True) -> list[str]:
    """Freeze every layer up to ``layer`` (included unless ``inclusive=False``); returns the frozen names.

    ``layer`` is a group name of :func:`layer_groups` (``"features.block2"``, or just ``"block2"``
    when unambiguous). Layers above it are made trainable. This is the "stop-gradient right after
    the last frozen layer" of the seed; :func:`stop_gradient_after` adds the stop itself, so the
    backward pass does not even enter the frozen layers.
    """
    groups = layer_groups(model, depth)
    cut = _group_index(groups, layer) + (1 if inclusive else 0)
    below = {n for _, names in groups[:cut] for n in names}
    for name, param in model.named_parameters():
        param.requires_grad_(name not in below)
    if batchnorm_stats:
        _hold_batchnorm_stats(model)
    return [n for n, _ in model.named_parameters() if n in below]


def stop_gradient_after(model: nn.Module, module_name: str) -> torch.utils.hooks.RemovableHandle:
    """Detach the output of the submodule ``module_name`` (a stop-gradient); returns the hook handle.

    Gradients then never flow below that point, which saves the backward pass through the frozen
    layers; call ``handle.remove()`` to undo it.
    """
    modules = dict(model.named_modules())
    if module_name not in modules or not module_name:
        hint = ", ".join(n for n in modules if n and n.count(".") <= 1)
        raise ConfigError(f"module {module_name!r} not found; modules: {hint}")

    def detach(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output.detach()

    return modules[module_name].register_forward_hook(detach)


def discriminative_param_groups(model: nn.Module, lr: float, *, decay: float = 2.6, depth: int = 2,
                                lrs: dict[str, float] | None = None) -> list[dict]:
    """Optimizer parameter groups with one learning rate per layer (ULMFiT, Howard and Ruder 2018).

    By default the top layer gets ``lr`` and each layer below gets its upper neighbour's rate divided
    by ``decay`` (2.6 in ULMFiT). ``lrs`` maps regular expressions over parameter names to explicit
    rates instead (the first matching pattern wins; unmatched parameters get ``lr``). Only trainable
    parameters appear, so frozen ones get no optimizer state. Each group carries its ``name``.
    """
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ConfigError(f"lr must be a number > 0, got {lr!r}")
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not decay >= 1:
        raise ConfigError(f"decay must be a number >= 1, got {decay!r}")
    params = dict(model.named_parameters())
    out: list[dict] = []
    if lrs:
        compiled = [(_compile(p), float(v), p) for p, v in lrs.items()]
        for _, value, raw in compiled:
            if not value > 0:
                raise ConfigError(f"learning rate for {raw!r} must be > 0, got {value!r}")
        buckets: dict[str, tuple[float, list[nn.Parameter]]] = {}
        for name, param in params.items():
            if not param.requires_grad:
                continue
            hit = next(((raw, value) for pat, value, raw in compiled if pat.search(name)), ("(default)", float(lr)))
            buckets.setdefault(hit[0], (hit[1], []))[1].append(param)
        unused = [raw for _, _, raw in compiled if raw not in buckets]
        if unused:
            raise ConfigError(f"lrs patterns {unused} match no trainable parameter")
        return [{"name": k, "params": v[1], "lr": v[0]} for k, v in buckets.items()]
    groups = layer_groups(model, depth)
    for rank, (group, names) in enumerate(reversed(groups)):
        trainable = [params[n] for n in names if params[n].requires_grad]
        if trainable:
            out.insert(0, {"name": group, "params": trainable, "lr": float(lr) / decay**rank})
    if not out:
        raise ConfigError("the model has no trainable parameters (everything is frozen)")
    return out


@dataclass
class GradualUnfreezing:
    """Gradual unfreezing (ULMFiT, Howard and Ruder 2018): unfreeze one more layer every ``every`` epochs.

    At stage 0 only the top ``start`` layers (default: the head) train; at stage ``s`` the top
    ``start + s`` layers do. ``apply(model, epoch)`` sets ``requires_grad`` for that epoch and
    returns the names of the trainable layers; ``stages(model)`` lists them all.
    """

    every: int = 1
    start: int = 1
    depth: int = 2

    def __post_init__(self) -> None:
        for name in ("every", "start", "depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"GradualUnfreezing {name} must be a positive integer, got {value!r}")

    def stage(self, epoch: int) -> int:
        """The stage of a 0-based ``epoch``."""
        return max(0, epoch) // self.every

    def apply(self, model: nn.Module, epoch: int) -> list[str]:
        """Make the top ``start + stage(epoch)`` layers trainable and the rest frozen; returns the trainable layers."""
        groups = layer_groups(model, self.depth)
        top = min(len(groups), self.start + self.stage(epoch))
        live = groups[len(groups) - top:]
        keep = {n for _, names in live for n in names}
        for name, param in model.named_parameters():
            param.requires_grad_(name in keep)
        _hold_batchnorm_stats(model)
        return [g for g, _ in live]

    def num_stages(self, model: nn.Module) -> int:
        """How many stages until every layer trains."""
        return max(1, len(layer_groups(model, self.depth)) - self.start + 1)
