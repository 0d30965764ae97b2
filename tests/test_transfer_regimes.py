"""The four-regime advisor, strategies and the SGD + StepLR fine-tuning recipe."""

from __future__ import annotations

import pytest
import torch

from mtl.backbones import create_backbone
from mtl.data import LabelledImages
from mtl.errors import ConfigError
from mtl.transfer import (
    FeatureCache,
    FineTuneRecipe,
    Strategy,
    advise,
    apply_strategy,
    fine_tune,
    measure_distance,
    trunk_layers,
)

LAYERS = ["features.block1", "features.block2", "features.block3", "features.block4"]


def data(n: int = 24, classes: int = 3) -> LabelledImages:
    g = torch.Generator().manual_seed(5)
    return LabelledImages(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % classes)


@pytest.mark.parametrize(("per_class", "distance", "expected"), [
    (1, 0.2, "linear_probe"), (1, 1.8, "partial:features.block3"), (20, 0.2, "full"), (20, 1.8, "full")])
def test_advice_follows_the_four_regimes(per_class, distance, expected):
    advice = advise(per_class, distance, LAYERS)
    assert str(advice.strategy) == expected
    assert ("little" in advice.regime) == (per_class < 5)
    assert ("different" in advice.regime) == (distance > 1)


def test_advice_rejects_bad_input():
    with pytest.raises(ConfigError, match="distance"):
        advise(5, 2.5, LAYERS)
    with pytest.raises(ConfigError, match="per_class"):
        advise(0, 1.0, LAYERS)
    with pytest.raises(ConfigError, match="strategy"):
        Strategy.parse("everything")
    with pytest.raises(ConfigError, match="from_layer"):
        Strategy("partial")


def test_strategies_freeze_what_they_say():
    m = create_backbone("conv4", hidden=4, num_classes=3)
    assert trunk_layers(m) == LAYERS
    frozen = apply_strategy(m, Strategy("linear_probe"))
    assert not any(n.startswith("head") for n in frozen) and len(frozen) == 16
    frozen = apply_strategy(m, Strategy.parse("partial:block3"))
    assert {n.split(".")[1] for n in frozen} == {"block1", "block2"}
    assert apply_strategy(m, Strategy("full")) == []


def test_recipe_is_sgd_momentum_with_steplr():
    m = create_backbone("conv4", hidden=4, num_classes=3)
    opt, sched = FineTuneRecipe(lr=0.1, epochs=8).build(m)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    for _ in range(7):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="step_size"):
        FineTuneRecipe(step_size=0)


def test_linear_probe_fine_tune_uses_the_cache_and_keeps_the_trunk():
    torch.manual_seed(0)
    m = create_backbone("conv4", hidden=4, num_classes=7)
    trunk = {k: v.clone() for k, v in m.features.state_dict().items()}
    cache = FeatureCache()
    res = fine_tune(m, data(), "linear_probe", recipe=FineTuneRecipe(epochs=2, lr=0.1), cache=cache)
    assert res.cached_features and cache.misses == 1 and m.num_classes == 3
    for name, value in m.features.state_dict().items():
        assert torch.equal(value, trunk[name]), name
    res = fine_tune(m, data(), "full", recipe=FineTuneRecipe(epochs=1, lr=0.1))
    assert not res.cached_features and res.history.steps == 1
    assert not torch.equal(m.features.block1.conv.weight, trunk["block1.conv.weight"])


def test_measured_distance_separates_a_shifted_domain():
    x = data(64).images
    near = measure_distance(torch.nn.Flatten(), x[:32], x[32:])
    far = measure_distance(torch.nn.Flatten(), x, 1.0 - x * 0.5)
    assert far > 1.5 and near < far
