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
from mtl.transfer.regimes import RULES, AdviceRule, CalibrationCell, calibrate_rule, distance_extractor, score_rule

LAYERS = ["features.block1", "features.block2", "features.block3", "features.block4"]


def data(n: int = 24, classes: int = 3) -> LabelledImages:
    g = torch.Generator().manual_seed(5)
    return LabelledImages(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % classes)


@pytest.mark.parametrize(("per_class", "distance", "expected"), [
    (1, 0.2, "linear_probe"), (1, 1.8, "partial:features.block3"), (20, 0.2, "full"), (20, 1.8, "full")])
def test_seed_rule_follows_the_four_regimes(per_class, distance, expected):
    advice = advise(per_class, distance, LAYERS, rule="four_regimes")
    assert str(advice.strategy) == expected
    assert ("little" in advice.regime) == (per_class < 5)
    assert ("different" in advice.regime) == (distance > 1)
    assert advice.rule == "four_regimes" and advice.measure == "features"


@pytest.mark.parametrize(("per_class", "distance", "expected"), [
    (1, 0.4, "linear_probe"), (4, 1.16, "linear_probe"), (1, 1.17, "full"), (1, 2.0, "full"), (5, 0.4, "full"),
    (10, 2.0, "full")])
def test_calibrated_rule_is_the_default_decision_table(per_class, distance, expected):
    advice = advise(per_class, distance, LAYERS)
    assert str(advice.strategy) == expected
    assert advice.rule == "calibrated" and advice.measure == "pixels"
    assert advice.thresholds == {"small_below": 5.0, "different_above": 1.16}
    assert f"pixels distance {distance:.2f}" in advice.reason


def test_thresholds_can_be_overridden_and_rules_given_as_tables():
    assert str(advise(4, 0.2, LAYERS, rule="four_regimes").strategy) == "linear_probe"
    assert str(advise(4, 0.2, LAYERS, rule="four_regimes", small_below=3).strategy) == "full"
    advice = advise(1, 0.9, LAYERS, rule="four_regimes", different_above=0.5)
    assert str(advice.strategy) == "partial:features.block3" and advice.thresholds["different_above"] == 0.5
    table = AdviceRule("mine", "pixels", 2.0, 1.5, "full", "linear_probe", "partial", "linear_probe")
    assert table.kind_for(1, 1.6) == "linear_probe" and table.kind_for(1, 1.5) == "full"
    assert table.kind_for(2, 0.1) == "partial" and table.kind_for(2, 1.9) == "linear_probe"
    advice = advise(1, 1.6, LAYERS, rule=table)
    assert advice.rule == "mine" and advice.measure == "pixels" and "pixels distance 1.60 > 1.5" in advice.reason


def test_advice_rejects_bad_input():
    with pytest.raises(ConfigError, match="distance"):
        advise(5, 2.5, LAYERS)
    with pytest.raises(ConfigError, match="per_class"):
        advise(0, 1.0, LAYERS)
    with pytest.raises(ConfigError, match="rule must be one of"):
        advise(1, 1.0, LAYERS, rule="best_guess")
    with pytest.raises(ConfigError, match="different_above"):
        advise(1, 1.0, LAYERS, different_above=3.0)
    with pytest.raises(ConfigError, match="measure"):
        AdviceRule("x", measure="logits")
    with pytest.raises(ConfigError, match="little_different"):
        AdviceRule("x", little_different="scratch")
    with pytest.raises(ConfigError, match="strategy"):
        Strategy.parse("everything")
    with pytest.raises(ConfigError, match="from_layer"):
        Strategy("partial")


def cell(per_class, pixels, features, lp, partial, full, label=""):
    return CalibrationCell(per_class, {"pixels": pixels, "first_layer": pixels, "features": features},
                           {"linear_probe": lp, "partial": partial, "full": full}, label)


def test_calibration_finds_the_measure_and_threshold_that_separate_the_winners():
    # Pixels separate the sources whose frozen features fail (1.9-2.0) from the others (0.3-1.2);
    # the trunk-feature distances are shuffled so that no threshold on them does.
    cells = [cell(1, 0.3, 1.9, .42, .40, .39), cell(1, 1.2, 1.2, .37, .35, .33), cell(1, 2.0, 1.5, .05, .15, .22),
             cell(1, 1.9, 1.0, .10, .18, .20), cell(10, 0.3, 1.9, .80, .85, .86), cell(10, 2.0, 1.5, .34, .70, .80)]
    rule, report = calibrate_rule(cells, measures=("pixels", "features"))
    assert rule.measure == "pixels" and rule.different_above == pytest.approx((1.2 + 1.9) / 2)
    assert rule.table() == {"little_similar": "linear_probe", "little_different": "full", "much_similar": "full",
                            "much_different": "full"}
    assert report["chosen"] == "pixels" and report["per_measure"]["pixels"]["lost"] == 0
    assert report["per_measure"]["features"]["lost"] > 0
    score = score_rule(rule, cells)
    assert score["hits"] == 6 and score["lost"] == 0
    seed = score_rule(RULES["four_regimes"], cells)
    assert seed["hits"] == 2 and seed["lost"] == pytest.approx(.02 + .02 + .07 + .10)


def test_calibration_prefers_no_split_and_keeps_the_base_rule_where_it_has_no_data():
    cells = [cell(1, 0.3, 0.3, .5, .4, .3), cell(1, 1.8, 1.8, .5, .4, .3)]
    rule, _ = calibrate_rule(cells, measures=("pixels",))
    assert rule.different_above == 2.0 and rule.little_similar == "linear_probe"
    assert (rule.much_similar, rule.much_different) == ("full", "full")  # no 'much data' cell: the seed's choice
    with pytest.raises(ConfigError, match="accuracy"):
        calibrate_rule([CalibrationCell(1, {"pixels": 0.1}, {"full": 0.3})], measures=("pixels",))
    with pytest.raises(ConfigError, match="first_layer"):
        calibrate_rule([CalibrationCell(1, {"pixels": 0.1}, {"full": 0.3})], measures=("first_layer",))


def test_distance_extractors_read_pixels_the_first_block_or_the_trunk():
    m = create_backbone("conv4", hidden=4, num_classes=3)
    x = data(2).images
    assert distance_extractor(m, "pixels")(x).shape == (2, 784)
    assert distance_extractor(m, "first_layer")(x).shape == (2, 4, 14, 14)
    assert distance_extractor(m, "features")(x).shape == (2, m.out_features)
    with pytest.raises(ConfigError, match="measure"):
        distance_extractor(m, "head")


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


def test_gradual_unfreezing_trains_the_top_first_then_everything():
    from mtl.transfer import GradualUnfreezing, layer_groups

    torch.manual_seed(0)
    m = create_backbone("conv4", hidden=4, num_classes=3)
    schedule = GradualUnfreezing(every=1, start=1, depth=2)
    groups = layer_groups(m, 2)
    bottom = groups[0][1][0]  # a parameter of the lowest layer group
    before = dict(m.named_parameters())[bottom].detach().clone()
    recipe = FineTuneRecipe(epochs=len(groups), lr=0.1, batch_size=8)
    # Stop after the first epoch: only the head may have moved, and the bottom has no optimizer state.
    first = fine_tune(m, data(), "full", recipe=FineTuneRecipe(epochs=1, lr=0.1, batch_size=8),
                      unfreezing=schedule, new_head=False)
    assert torch.equal(dict(m.named_parameters())[bottom], before)
    assert bottom in first.frozen
    result = fine_tune(m, data(), "full", recipe=recipe, unfreezing=schedule, new_head=False)
    assert not torch.equal(dict(m.named_parameters())[bottom], before)
    assert result.frozen == [] and len(result.history.epochs) == len(groups) and result.history.steps == 3 * len(groups)
    with pytest.raises(ConfigError, match="strategy 'full'"):
        fine_tune(m, data(), "linear_probe", unfreezing=schedule)
