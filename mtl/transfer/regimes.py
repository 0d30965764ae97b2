"""Fine-tuning strategies, the classic recipe, and an advisor for the four transfer regimes.

The four regimes (the CS231n transfer-learning notes; Yosinski et al. 2014 on how feature
generality falls with depth) cross the size of the target data set with how similar it is to the
source:

- little data, similar source: train a linear classifier on the top features (linear probe);
- little data, different source: keep only the lower, more generic layers frozen and fine-tune
  the rest (partial fine-tune from a middle layer);
- much data, similar or different: fine-tune the whole network (full fine-tune).

:func:`advise` applies a decision table (:class:`AdviceRule`) to a target size and a measured
source/target distance (the proxy A-distance of Ben-David et al. 2007,
:func:`mtl.adaptation.proxy_a_distance`, on raw pixels or the source model's features, or a value
given by the user). ``RULES["four_regimes"]`` is the rule above with the seed's uncalibrated
thresholds; the default ``RULES["calibrated"]`` was fitted by :func:`calibrate_rule` on an Omniglot
split disjoint from the evaluation one: with little data a linear probe unless the raw-pixel
distance says the low-level statistics differ, then a full fine-tune; with much data a full
fine-tune. :func:`fine_tune` runs any strategy with the classic recipe of the PyTorch
fine-tuning tutorial: a new head, SGD with momentum 0.9, ``StepLR(step_size=7, gamma=0.1)``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from mtl.data.base import LabelledImages
from mtl.errors import ConfigError
from mtl.training import TrainHistory, make_optimizer, predict_logits, train_classifier
from mtl.transfer.features import FeatureCache, train_on_features
from mtl.transfer.freezing import (
    GradualUnfreezing,
    _hold_batchnorm_stats,
    discriminative_param_groups,
    freeze_below,
    frozen_names,
    layer_groups,
    trainable_names,
    unfreeze,
)
from mtl.utils.precision import check_precision

__all__ = [
    "DISTANCE_MEASURES",
    "RULES",
    "STRATEGIES",
    "Advice",
    "AdviceRule",
    "CalibrationCell",
    "FineTuneRecipe",
    "FineTuneResult",
    "Strategy",
    "advise",
    "apply_strategy",
    "calibrate_rule",
    "distance_extractor",
    "fine_tune",
    "get_rule",
    "measure_distance",
    "replace_head",
    "score_rule",
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


DISTANCE_MEASURES = ("pixels", "first_layer", "features")
"""Where a rule measures the source/target proxy A-distance: raw pixels, the source model's first
trunk layer, or its whole trunk (the features the head sees). See :func:`distance_extractor`."""


@dataclass(frozen=True)
class AdviceRule:
    """A decision table: target size (``small_below``) x source/target distance (``different_above``,
    measured on ``measure``) -> one strategy kind per regime (``"partial"`` starts at the middle layer).

    :data:`RULES` holds the seed's four-regime rule and the one calibrated on Omniglot
    (``benchmarks/transfer_calibrate.py``, :func:`calibrate_rule`).
    """

    name: str
    measure: str = "features"
    small_below: float = 5.0
    different_above: float = 1.0
    little_similar: str = "linear_probe"
    little_different: str = "partial"
    much_similar: str = "full"
    much_different: str = "full"
    why: str = ""

    def __post_init__(self) -> None:
        if self.measure not in DISTANCE_MEASURES:
            raise ConfigError(f"rule measure must be one of {', '.join(DISTANCE_MEASURES)}, got {self.measure!r}")
        if not self.small_below > 0 or not 0 <= self.different_above <= 2:
            raise ConfigError(f"rule needs small_below > 0 and different_above in [0, 2], got "
                              f"small_below={self.small_below!r}, different_above={self.different_above!r}")
        for regime in _REGIMES:
            if getattr(self, regime) not in STRATEGIES:
                raise ConfigError(f"rule {regime} must be one of {', '.join(STRATEGIES)}, "
                                  f"got {getattr(self, regime)!r}")

    def kind_for(self, per_class: float, distance: float) -> str:
        """The strategy kind this table gives for ``per_class`` examples and ``distance``."""
        small, different = per_class < self.small_below, distance > self.different_above
        return getattr(self, f"{'little' if small else 'much'}_{'different' if different else 'similar'}")

    def table(self) -> dict[str, str]:
        """The four regimes and their strategy kinds."""
        return {regime: getattr(self, regime) for regime in _REGIMES}


_REGIMES = ("little_similar", "little_different", "much_similar", "much_different")

RULES: dict[str, AdviceRule] = {
    "four_regimes": AdviceRule(
        "four_regimes", "features", 5.0, 1.0, "linear_probe", "partial", "full", "full",
        "the seed's four regimes (CS231n notes); thresholds not calibrated"),
    "calibrated": AdviceRule(
        "calibrated", "pixels", 5.0, 1.16, "linear_probe", "full", "full", "full",
        "fitted by calibrate_rule on 10 cells of an Omniglot split disjoint from the evaluation one "
        "(target Korean + Tagalog; 5 sources; 1 and 10 per class; benchmarks/transfer_calibrate.py): "
        "frozen features serve little data unless the low-level image statistics differ"),
}
"""Named decision tables for :func:`advise`: ``"four_regimes"`` is the seed's uncalibrated rule,
``"calibrated"`` the one fitted on a calibration split (``docs/transfer.md``). The threshold
1.16 is the midpoint between the calibration sources at pixel distance 0.79 and 1.53;
``small_below`` stays 5 (only 1 and 10 per class were measured, so any value in (1, 10] fits)."""
DEFAULT_RULE = "calibrated"


@dataclass
class Advice:
    """A recommended strategy, the regime it comes from, the rule used, and why."""

    strategy: Strategy
    regime: str
    per_class: float
    distance: float
    reason: str
    thresholds: dict[str, float] = field(default_factory=dict)
    rule: str = DEFAULT_RULE
    measure: str = "features"

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        out = asdict(self)
        out["strategy"] = str(self.strategy)
        return out


_WHY = {
    "linear_probe": "the frozen features already fit; more trainable weights would overfit",
    "partial": "keep the generic lower layers, re-learn the source-specific upper ones from {start}",
    "full": "adapt every layer: {cause}",
}


def get_rule(rule: str | AdviceRule) -> AdviceRule:
    """``rule`` itself, or the :data:`RULES` entry of that name."""
    if isinstance(rule, AdviceRule):
        return rule
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)} or an AdviceRule, got {rule!r}")
    return RULES[rule]


def advise(per_class: float, distance: float, layers: list[str], *, rule: str | AdviceRule = DEFAULT_RULE,
           small_below: float | None = None, different_above: float | None = None) -> Advice:
    """Recommend a strategy from the target size and the source/target distance with a decision table.

    Args:
        per_class: labelled target examples per class.
        distance: proxy A-distance between source and target in ``[0, 2]`` (0: indistinguishable),
            measured where the rule says (``Advice.measure``; see :func:`distance_extractor`).
        layers: the model's trunk layers, input first (see :func:`trunk_layers`); a partial
            fine-tune starts at the middle one.
        rule: a name in :data:`RULES` (``"four_regimes"``: the seed's rule, ``"calibrated"``: fitted
            on a calibration split of Omniglot) or an :class:`AdviceRule`.
        small_below: override the rule's: fewer examples per class than this is "little data".
        different_above: override the rule's: a distance above this is a "different" source.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, (int, float)) or not per_class > 0:
        raise ConfigError(f"per_class must be a number > 0, got {per_class!r}")
    if isinstance(distance, bool) or not isinstance(distance, (int, float)) or not 0 <= distance <= 2:
        raise ConfigError(f"distance must be a proxy A-distance in [0, 2], got {distance!r}")
    if not layers:
        raise ConfigError("layers must list at least one trunk layer")
    table = get_rule(rule)
    overrides = {k: v for k, v in (("small_below", small_below), ("different_above", different_above))
                 if v is not None}
    if overrides:
        table = replace(table, **overrides)
    small = per_class < table.small_below
    different = distance > table.different_above
    regime = f"{'little' if small else 'much'} data, {'different' if different else 'similar'} source"
    size = f"{per_class:g} per class {'<' if small else '>='} {table.small_below:g}"
    dist = f"{table.measure} distance {distance:.2f} {'>' if different else '<='} {table.different_above:g}"
    kind = table.kind_for(per_class, distance)
    start = layers[len(layers) // 2]
    strategy = Strategy("partial", start) if kind == "partial" else Strategy(kind)
    cause = "enough data to adapt without overfitting" if not small else "the frozen features do not fit the target"
    why = _WHY[kind].format(start=start, cause=cause)
    return Advice(strategy, regime, float(per_class), float(distance), f"{size}, {dist}: {why}",
                  {"small_below": table.small_below, "different_above": table.different_above}, table.name,
                  table.measure)


def distance_extractor(model: nn.Module, measure: str) -> nn.Module:
    """The map whose outputs :func:`measure_distance` compares for ``measure`` (see :data:`DISTANCE_MEASURES`).

    ``"pixels"``: ``nn.Flatten()``; ``"first_layer"``: the first trunk layer of ``model``;
    ``"features"``: the whole trunk.
    """
    from mtl.transfer.features import split_at

    if measure == "pixels":
        return nn.Flatten()
    if measure == "first_layer":
        return split_at(model, trunk_layers(model)[0]).lower
    if measure == "features":
        return split_at(model, "features").lower
    raise ConfigError(f"measure must be one of {', '.join(DISTANCE_MEASURES)}, got {measure!r}")


@dataclass
class CalibrationCell:
    """One measured cell for :func:`calibrate_rule`: target size, distances per measure, mean accuracy per strategy.

    ``accuracy`` maps strategy kinds (``"linear_probe"``, ``"partial"``, ``"full"``) to mean test accuracy.
    """

    per_class: float
    distances: dict[str, float]
    accuracy: dict[str, float]
    label: str = ""


_TIE = 1e-6  # accuracies this close are a tie (float32 accuracies averaged in another order)


def _lost(cell: CalibrationCell, kind: str) -> float:
    lost = max(cell.accuracy.values()) - cell.accuracy[kind]
    return 0.0 if lost < _TIE else lost


def score_rule(rule: AdviceRule, cells: list[CalibrationCell]) -> dict[str, Any]:
    """How ``rule`` does on measured cells: hits (advised = best, ties count), accuracy lost per cell and in total."""
    rows, hits, lost = [], 0, 0.0
    for cell in cells:
        kind = rule.kind_for(cell.per_class, cell.distances[rule.measure])
        best = "/".join(k for k in STRATEGIES if _lost(cell, k) == 0)
        regret = _lost(cell, kind)
        hits += regret == 0
        lost += regret
        rows.append({"label": cell.label, "advised": kind, "best": best, "lost": regret})
    return {"hits": hits, "cells": len(cells), "lost": lost, "rows": rows}


def calibrate_rule(cells: list[CalibrationCell], *, measures: tuple[str, ...] = DISTANCE_MEASURES,
                   small_below: float = 5.0, name: str = "calibrated", base: str | AdviceRule = "four_regimes",
                   ) -> tuple[AdviceRule, dict[str, Any]]:
    """Fit a decision table to measured cells: the measure, the distance threshold and a strategy per regime.

    For each measure, each candidate threshold (a midpoint between neighbouring measured distances,
    or none: every source "similar") splits the cells into the four regimes; each regime gets the
    strategy that loses the least summed accuracy against the per-cell best (ties: more cells won,
    then ``base``'s choice). The measure and threshold losing least overall win; ties go to the
    rule without a split, then to the widest gap between the distances on either side of the
    threshold (a max-margin choice). A regime with no cell keeps ``base``'s strategy. Returns the
    rule and a report (the best threshold of every measure, with its loss and hits).
    """
    if not cells:
        raise ConfigError("calibrate_rule needs at least one measured cell")
    for m in measures:
        if m not in DISTANCE_MEASURES:
            raise ConfigError(f"measures must be among {', '.join(DISTANCE_MEASURES)}, got {m!r}")
        if any(m not in c.distances for c in cells):
            raise ConfigError(f"every cell needs a {m!r} distance")
    if any(set(c.accuracy) != set(STRATEGIES) for c in cells):
        raise ConfigError(f"every cell needs the accuracy of each of {', '.join(STRATEGIES)}")
    fallback = get_rule(base)
    order = {k: i for i, k in enumerate(STRATEGIES)}
    best_of: dict[str, dict[str, Any]] = {}
    for m in measures:
        values = sorted({round(c.distances[m], 6) for c in cells})
        candidates = [(2.0, 0.0, False)] + [((a + b) / 2, b - a, True) for a, b in zip(values, values[1:])]
        for threshold, margin, split in candidates:
            table: dict[str, str] = {}
            loss, hits = 0.0, 0
            for regime in _REGIMES:
                small, different = regime.startswith("little"), regime.endswith("different")
                group = [c for c in cells if (c.per_class < small_below) == small
                         and (c.distances[m] > threshold) == different]
                if not group:
                    table[regime] = getattr(fallback, regime)
                    continue

                def cost(kind: str, group: list[CalibrationCell] = group, regime: str = regime) -> tuple:
                    lost = sum(_lost(c, kind) for c in group)
                    won = sum(_lost(c, kind) == 0 for c in group)
                    return round(lost, 9), -won, kind != getattr(fallback, regime), order[kind]

                table[regime] = min(STRATEGIES, key=cost)
                loss += cost(table[regime])[0]
                hits -= cost(table[regime])[1]
            key = (round(loss, 9), -hits, split, -margin)
            entry = {"measure": m, "threshold": threshold, "margin": margin, "lost": loss, "hits": hits,
                     "cells": len(cells), "table": table, "key": key}
            if m not in best_of or key < best_of[m]["key"]:
                best_of[m] = entry
    chosen = min(best_of.values(), key=lambda e: e["key"])
    rule = AdviceRule(name, chosen["measure"], small_below, chosen["threshold"], **chosen["table"],
                      why=f"calibrated on {len(cells)} cells: lost {100 * chosen['lost']:.1f} accuracy points "
                          f"in total, best in {chosen['hits']} of {len(cells)}")
    report = {m: {k: v for k, v in e.items() if k != "key"} for m, e in best_of.items()}
    return rule, {"chosen": chosen["measure"], "per_measure": report}


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
    its upper neighbour's rate divided by it. ``optimizer="adam"`` is allowed too. ``precision="bf16"``
    trains under bfloat16 autocast (:func:`mtl.training.train_classifier`).
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
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_precision(self.precision)
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
              progress: bool = False, unfreezing: GradualUnfreezing | None = None) -> FineTuneResult:
    """Fine-tune a pre-trained registry backbone on ``train`` with ``strategy`` and ``recipe``.

    With ``new_head`` the head is replaced by a fresh one of ``train.num_classes`` outputs. A linear
    probe (and a partial fine-tune whose cut is a trunk layer) trains on cached bottleneck features
    when ``cache`` is set (``True``: a fresh in-memory cache), since the frozen part is computed the
    same way either way.

    ``unfreezing`` (with the ``full`` strategy only) trains the top layers first and unfreezes one
    more layer group at each of its stages (ULMFiT, Howard and Ruder 2018); the optimizer and the
    StepLR schedule run across all epochs, and a layer has no optimizer state until it is unfrozen.
    """
    strategy = Strategy.parse(strategy) if isinstance(strategy, str) else strategy
    recipe = recipe or FineTuneRecipe()
    if unfreezing is not None and not isinstance(unfreezing, GradualUnfreezing):
        raise ConfigError(f"unfreezing must be a GradualUnfreezing or None, got {type(unfreezing).__name__}")
    if unfreezing is not None and strategy.kind != "full":
        raise ConfigError(f"gradual unfreezing ends with every layer trainable: use it with strategy 'full', "
                          f"not {str(strategy)!r}")
    torch.manual_seed(seed)
    if new_head:
        replace_head(model, train.num_classes)
    if unfreezing is not None:
        return _fine_tune_gradually(model, train, recipe, unfreezing, val, seed, device, progress)
    frozen = apply_strategy(model, strategy)
    trainable = trainable_names(model)
    start = time.perf_counter()
    use_cache = (cache is not None and cache is not False and strategy.kind != "full" and recipe.layer_decay is None
                 and isinstance(getattr(model, "features", None), nn.Sequential))
    kwargs = {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "seed": seed, "progress": progress,
              "desc": f"fine-tune {strategy}", "precision": recipe.precision}
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


def _fine_tune_gradually(model: nn.Module, train: LabelledImages, recipe: FineTuneRecipe,
                         unfreezing: GradualUnfreezing, val: LabelledImages | None, seed: int,
                         device: torch.device | str, progress: bool) -> FineTuneResult:
    start = time.perf_counter()
    unfreeze(model)
    opt, sched = recipe.build(model)  # every parameter: frozen ones get no gradient, hence no update or state
    history = TrainHistory()
    for epoch in range(recipe.epochs):
        live = unfreezing.apply(model, epoch)
        part = train_classifier(model, train, optimizer=opt, scheduler=sched, val=val, device=device, epochs=1,
                                batch_size=recipe.batch_size, seed=seed + epoch, progress=progress,
                                desc=f"fine-tune, top {len(live)} layers", precision=recipe.precision)
        history.epochs.append(epoch + 1)
        history.train_loss.extend(part.train_loss)
        history.val_accuracy.extend(part.val_accuracy)
        history.steps += part.steps
    history.seconds = time.perf_counter() - start
    return FineTuneResult("full (gradual unfreezing)", frozen_names(model), trainable_names(model), history,
                          history.seconds, False)


def _group(layers: list[str], strategy: Strategy) -> str:
    layer = strategy.from_layer or ""
    if layer in layers:
        return layer
    hits = [g for g in layers if g.split(".")[-1] == layer]
    if len(hits) != 1:
        raise ConfigError(f"from_layer {layer!r} is not one of the trunk layers: {', '.join(layers)}")
    return hits[0]
