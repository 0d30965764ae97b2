"""Fine-tuning strategies, the classic recipe, and an advisor for the four transfer regimes.

The four regimes (the CS231n transfer-learning notes; Yosinski et al. 2014 on how feature
generality falls with depth) cross the size of the target data set with how similar it is to the
source:

- little data, similar source: train a linear classifier on the top features (linear probe);
- little data, different source: keep only the lower, more generic layers frozen and fine-tune
  the rest (partial fine-tune from a middle layer);
- much data, similar or different: fine-tune the whole network (full fine-tune).

:func:`advise` applies that rule to a target size and a measured source/target distance (the
proxy A-distance of Ben-David et al. 2007, :func:`mtl.adaptation.proxy_a_distance`, or a value
given by the user). :func:`fine_tune` runs any strategy with the classic recipe of the PyTorch
fine-tuning tutorial: a new head, SGD with momentum 0.9, ``StepLR(step_size=7, gamma=0.1)``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from mtl.data.base import LabelledImages
from mtl.errors import ConfigError
from mtl.training import TrainHistory, make_optimizer, predict_logits, train_classifier
from mtl.transfer.features import FeatureCache, train_on_features
from mtl.transfer.freezing import (
    _hold_batchnorm_stats,
    discriminative_param_groups,
    freeze_below,
    layer_groups,
    trainable_names,
)

__all__ = [
    "STRATEGIES",
    "Advice",
    "FineTuneRecipe",
    "FineTuneResult",
    "Strategy",
    "advise",
    "apply_strategy",
    "fine_tune",
    "measure_distance",
    "replace_head",
    "trunk_layers",
]

STRATEGIES = ("linear_probe", "partial", "full")
"""Fine-tuning strategies: head only; from a given layer upward; everything."""


@dataclass(frozen=True)
class Strategy:
    """A fine-tuning strategy; ``from_layer`` (partial only) is the lowest trainable trunk layer."""

    kind: str
    from_layer: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.kind!r}")
        if (self.kind == "partial") != (self.from_layer is not None):
            raise ConfigError(f"strategy 'partial' needs from_layer (and only it takes one), got {self!r}")

    @classmethod
    def parse(cls, text: str) -> Strategy:
        """``"linear_probe"``, ``"full"`` or ``"partial:<layer>"`` (e.g. ``"partial:block3"``)."""
        kind, _, layer = text.partition(":")
        return cls(kind, layer or None)

    def __str__(self) -> str:
        return self.kind if self.from_layer is None else f"{self.kind}:{self.from_layer}"


def trunk_layers(model: nn.Module) -> list[str]:
    """The trunk's trainable layers from the input upward (``features.block1``, ...), head excluded."""
    return [g for g, _ in layer_groups(model) if not g.startswith("head")]


@dataclass
class Advice:
    """A recommended strategy, the regime it comes from, and why."""

    strategy: Strategy
    regime: str
    per_class: float
    distance: float
    reason: str
    thresholds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        out = asdict(self)
        out["strategy"] = str(self.strategy)
        return out


def advise(per_class: float, distance: float, layers: list[str], *, small_below: float = 5.0,
           different_above: float = 1.0) -> Advice:
    """Recommend a strategy from the target size and the source/target distance (the four regimes).

    Args:
        per_class: labelled target examples per class.
        distance: proxy A-distance between source and target in ``[0, 2]`` (0: indistinguishable).
        layers: the model's trunk layers, input first (see :func:`trunk_layers`); a partial
            fine-tune starts at the middle one.
        small_below: fewer examples per class than this is "little data".
        different_above: a distance above this is a "different" source.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, (int, float)) or not per_class > 0:
        raise ConfigError(f"per_class must be a number > 0, got {per_class!r}")
    if isinstance(distance, bool) or not isinstance(distance, (int, float)) or not 0 <= distance <= 2:
        raise ConfigError(f"distance must be a proxy A-distance in [0, 2], got {distance!r}")
    if not layers:
        raise ConfigError("layers must list at least one trunk layer")
    small = per_class < small_below
    different = distance > different_above
    regime = f"{'little' if small else 'much'} data, {'different' if different else 'similar'} source"
    size = f"{per_class:g} per class {'<' if small else '>='} {small_below:g}"
    dist = f"distance {distance:.2f} {'>' if different else '<='} {different_above:g}"
    if small and not different:
        strategy, why = Strategy("linear_probe"), "the top features already fit; more trainable weights would overfit"
    elif small:
        start = layers[len(layers) // 2]
        strategy = Strategy("partial", start)
        why = f"keep the generic lower layers, re-learn the source-specific upper ones from {start}"
    else:
        strategy, why = Strategy("full"), "enough data to adapt every layer without overfitting"
    return Advice(strategy, regime, float(per_class), float(distance), f"{size}, {dist}: {why}",
                  {"small_below": small_below, "different_above": different_above})


@torch.no_grad()
def measure_distance(extractor: nn.Module, source: torch.Tensor, target: torch.Tensor, *, max_samples: int = 1000,
                     seed: int = 0, **pad_kwargs: Any) -> float:
    """Proxy A-distance (Ben-David et al. 2007) between ``source`` and ``target`` in ``extractor``'s output space.

    Up to ``max_samples`` of each are drawn (seeded); ``pad_kwargs`` go to
    :func:`mtl.adaptation.proxy_a_distance`. Pass ``nn.Flatten()`` as the extractor for raw pixels.
    """
    from mtl.adaptation import proxy_a_distance

    gen = torch.Generator().manual_seed(seed)

    def sample(x: torch.Tensor) -> torch.Tensor:
        idx = torch.randperm(len(x), generator=gen)[:max_samples]
        return predict_logits(extractor, x[idx])

    return float(proxy_a_distance(sample(source), sample(target), seed=seed, **pad_kwargs).distance)


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A fresh ``Linear(out_features, num_classes)`` head (resnet18's ``fc`` swap); the trunk is untouched."""
    if not hasattr(model, "reset_head"):
        raise ConfigError(f"replace_head needs a registry Backbone, got {type(model).__name__}")
    return model.reset_head(num_classes)


def apply_strategy(model: nn.Module, strategy: Strategy) -> list[str]:
    """Set ``requires_grad`` for ``strategy``; returns the frozen parameter names."""
    layers = trunk_layers(model)
    for p in model.parameters():
        p.requires_grad_(True)
    if strategy.kind == "full":
        _hold_batchnorm_stats(model)
        return []
    if strategy.kind == "linear_probe":
        return freeze_below(model, layers[-1])
    return freeze_below(model, strategy.from_layer, inclusive=False)  # type: ignore[arg-type]


@dataclass
class FineTuneRecipe:
    """The seed's fine-tuning recipe: SGD (momentum 0.9) with ``StepLR(step_size=7, gamma=0.1)``.

    ``layer_decay`` > 1 gives discriminative learning rates (ULMFiT): each layer below the top gets
    its upper neighbour's rate divided by it. ``optimizer="adam"`` is allowed too.
    """

    epochs: int = 25
    lr: float = 1e-3
    momentum: float = 0.9
    step_size: int = 7
    gamma: float = 0.1
    batch_size: int = 32
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    layer_decay: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "step_size", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"recipe {name} must be a positive integer, got {value!r}")
        if not self.lr > 0 or not 0 < self.gamma <= 1 or not 0 <= self.momentum < 1:
            raise ConfigError(f"recipe needs lr > 0, gamma in (0, 1] and momentum in [0, 1), got lr={self.lr!r}, "
                              f"gamma={self.gamma!r}, momentum={self.momentum!r}")

    def build(self, model: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
        """The optimizer over ``model``'s trainable parameters and its StepLR scheduler."""
        if self.layer_decay:
            params: list = discriminative_param_groups(model, self.lr, decay=self.layer_decay)
        else:
            params = [p for p in model.parameters() if p.requires_grad]
            if not params:
                raise ConfigError("the model has no trainable parameters (everything is frozen)")
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        else:
            opt = make_optimizer(params, self.optimizer, self.lr, self.weight_decay)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=self.step_size, gamma=self.gamma)


@dataclass
class FineTuneResult:
    """What :func:`fine_tune` did: strategy, frozen names, training history, seconds, cache use."""

    strategy: str
    frozen: list[str]
    trainable: list[str]
    history: TrainHistory
    seconds: float
    cached_features: bool

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON (the parameter name lists are summarised by their length)."""
        return {"strategy": self.strategy, "frozen": len(self.frozen), "trainable": len(self.trainable),
                "epochs": len(self.history.epochs), "steps": self.history.steps,
                "final_train_loss": self.history.train_loss[-1] if self.history.train_loss else None,
                "seconds": self.seconds, "cached_features": self.cached_features}


def fine_tune(model: nn.Module, train: LabelledImages, strategy: Strategy | str, *,
              recipe: FineTuneRecipe | None = None, val: LabelledImages | None = None, new_head: bool = True,
              cache: FeatureCache | bool | None = True, seed: int = 0, device: torch.device | str = "cpu",
              progress: bool = False) -> FineTuneResult:
    """Fine-tune a pre-trained registry backbone on ``train`` with ``strategy`` and ``recipe``.

    With ``new_head`` the head is replaced by a fresh one of ``train.num_classes`` outputs. A linear
    probe (and a partial fine-tune whose cut is a trunk layer) trains on cached bottleneck features
    when ``cache`` is set (``True``: a fresh in-memory cache), since the frozen part is computed the
    same way either way.
    """
    strategy = Strategy.parse(strategy) if isinstance(strategy, str) else strategy
    recipe = recipe or FineTuneRecipe()
    torch.manual_seed(seed)
    if new_head:
        replace_head(model, train.num_classes)
    frozen = apply_strategy(model, strategy)
    trainable = trainable_names(model)
    start = time.perf_counter()
    use_cache = (cache is not None and cache is not False and strategy.kind != "full" and recipe.layer_decay is None
                 and isinstance(getattr(model, "features", None), nn.Sequential))
    kwargs = {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "seed": seed, "progress": progress,
              "desc": f"fine-tune {strategy}"}
    cut = None
    if use_cache:
        layers = trunk_layers(model)
        if strategy.kind == "linear_probe":
            cut = "features"
        elif layers.index(_group(layers, strategy)) > 0:
            cut = layers[layers.index(_group(layers, strategy)) - 1]
    if cut is not None:
        opt, sched = recipe.build(model)
        history = train_on_features(model, cut, train, cache=cache if isinstance(cache, FeatureCache) else None,
                                    val=val, device=device, optimizer=opt, scheduler=sched, **kwargs)
    else:
        opt, sched = recipe.build(model)
        history = train_classifier(model, train, optimizer=opt, scheduler=sched, val=val, device=device, **kwargs)
    return FineTuneResult(str(strategy), frozen, trainable, history, time.perf_counter() - start, cut is not None)


def _group(layers: list[str], strategy: Strategy) -> str:
    layer = strategy.from_layer or ""
    if layer in layers:
        return layer
    hits = [g for g in layers if g.split(".")[-1] == layer]
    if len(hits) != 1:
        raise ConfigError(f"from_layer {layer!r} is not one of the trunk layers: {', '.join(layers)}")
    return hits[0]
