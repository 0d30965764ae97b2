"""Domain adaptation: gradient reversal, proxy A-distance, shifts, DANN, ADDA, AdaBN, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from mtl.adaptation import (
    SHIFTS,
    AdaptConfig,
    ADDAConfig,
    DANNConfig,
    GradientReversal,
    adapt_batch_norm,
    evaluate_adaptation,
    ganin_lambda,
    grad_reverse,
    make_domain_split,
    make_target_domain,
    pca_2d,
    plot_domain_features,
    proxy_a_distance,
    random_translate,
    source_domain,
    train_adda,
    train_dann,
    train_source_only,
)
from mtl.adaptation.experiment import gap_recovered, run_methods
from mtl.backbones import create_backbone
from mtl.data import LabelledImages, make_glyphs
from mtl.errors import ConfigError

TINY = {"hidden": 8, "num_blocks": 2}


@pytest.fixture(scope="module")
def glyph_split():
    data = make_glyphs(4, samples_per_class=12, image_size=16, seed=0)
    return make_domain_split(data, "mnistm", source_groups=range(1, 5), target_groups=range(5, 9),
                             test_groups=range(9, 13))


# ------------------------------------------------------------------------------------- reversal


def test_gradient_reversal_is_identity_forward_and_negates_backward():
    x = torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(5, 3)
    y = grad_reverse(x, 0.37)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.allclose(x.grad, -0.37 * upstream)


def test_gradient_reversal_module_follows_ganin_schedule():
    layer = GradientReversal(gamma=10.0)
    lam = layer.set_progress(0.3)
    assert lam == pytest.approx(2 / (1 + math.exp(-3.0)) - 1)
    x = torch.ones(4, requires_grad=True)
    layer(x).sum().backward()
    assert torch.allclose(x.grad, torch.full((4,), -lam))


def test_ganin_lambda_goes_from_zero_to_one_monotonically():
    values = [ganin_lambda(p / 10) for p in range(11)]
    assert values[0] == 0.0
    assert values[-1] == pytest.approx(1.0, abs=1e-4)
    assert all(b > a for a, b in zip(values, values[1:]))
    assert ganin_lambda(0.5, gamma=0.0) == 0.0
    with pytest.raises(ConfigError, match="progress"):
        ganin_lambda(1.5)


# ----------------------------------------------------------------------------------- divergence


def test_a_distance_near_zero_for_one_domain_and_near_two_for_separable():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 10, generator=gen), torch.randn(300, 10, generator=gen)
    same = proxy_a_distance(a, b, seed=0, epochs=100)
    assert same.distance < 0.3
    far = proxy_a_distance(a, b + 8.0, seed=0, epochs=100)
    assert far.distance > 1.9 and far.error < 0.03


# --------------------------------------------------------------------------------------- shifts


@pytest.mark.parametrize("shift", SHIFTS)
def test_shifts_are_reproducible_and_keep_labels(shift):
    data = make_glyphs(3, samples_per_class=4, image_size=16, seed=1)
    a, b = make_target_domain(data, shift, seed=5), make_target_domain(data, shift, seed=5)
    c = make_target_domain(data, shift, seed=6)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.equal(a.targets, data.targets)
    assert a.images.min() >= 0 and a.images.max() <= 1
    assert a.image_shape == source_domain(data, shift).image_shape
    assert (a.images.mean() - data.images.mean()).abs() > 0.1  # a real change of the inputs


def test_invert_without_distortion_is_exact_inversion():
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(make_target_domain(x, "invert-elastic", elastic_sigma=0.0), 1 - x)


def test_random_translate_moves_content_and_keeps_shape():
    x = torch.zeros(6, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    y = random_translate(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.equal(y.sum((1, 2, 3)), x.sum((1, 2, 3)))
    assert not torch.equal(y, x)


def test_domain_split_groups_are_disjoint(glyph_split):
    s = glyph_split
    assert len(s.source_train) == len(s.target_train) == len(s.source_test) == 16
    assert s.source_train.image_shape == s.target_train.image_shape == (3, 16, 16)
    assert torch.equal(s.source_test.targets, s.target_test.targets)
    with pytest.raises(ConfigError, match="disjoint"):
        make_domain_split(make_glyphs(2, 6, 16), source_groups=[1, 2], target_groups=[2, 3], test_groups=[4])


# -------------------------------------------------------------------------------------- methods


def test_dann_trains_and_records_the_schedule(glyph_split):
    s = glyph_split
    cfg = DANNConfig(steps=12, batch_size=8, log_every=4, progress=False)
    res = train_dann("conv4", s.source_train, s.target_train.images, cfg, backbone_kwargs=TINY, val=s.target_test)
    assert res.steps == 12 and [r["step"] for r in res.history] == [4, 8, 12]
    lambdas = [r["lambda"] for r in res.history]
    assert lambdas == sorted(lambdas) and lambdas[-1] == pytest.approx(ganin_lambda(11 / 12))
    assert 0 <= res.history[-1]["val_accuracy"] <= 1
    metrics = evaluate_adaptation(res, s)
    assert 0 <= metrics["a_distance"] <= 2


def test_dann_reversal_changes_the_features(glyph_split):
    """With domain_weight 0 the domain loss cannot reach the features; with 1 it does."""
    s = glyph_split
    weights = []
    for w in (0.0, 1.0):
        cfg = DANNConfig(steps=5, batch_size=8, domain_weight=w, gamma=100.0, progress=False)
        res = train_dann("conv4", s.source_train, s.target_train.images, cfg, backbone_kwargs=TINY)
        weights.append(res.model.features[0].conv.weight.detach().clone())
    assert not torch.allclose(weights[0], weights[1])


def test_adda_leaves_source_model_and_head_unchanged(glyph_split):
    s = glyph_split
    src = train_source_only("conv4", s.source_train, AdaptConfig(steps=6, batch_size=8, progress=False),
                            backbone_kwargs=TINY).model
    before = {k: v.clone() for k, v in src.state_dict().items()}
    res = train_adda(src, s.source_train, s.target_train, ADDAConfig(steps=6, batch_size=8, progress=False))
    assert all(torch.equal(before[k], v) for k, v in src.state_dict().items())
    assert res.source_model is src and res.model is not src
    assert torch.equal(res.model.head.weight, src.head.weight)
    assert not torch.equal(res.model.features[0].conv.weight, src.features[0].conv.weight)


def test_adabn_uses_target_statistics_and_keeps_weights():
    model = create_backbone("conv4", in_channels=1, image_size=16, hidden=4, num_blocks=2, num_classes=2)
    target = torch.rand(32, 1, 16, 16) + 3.0
    adapted = adapt_batch_norm(model, target)
    bn = adapted.features[0].norm
    with torch.no_grad():
        pre = model.features[0].conv(target)
    assert torch.allclose(bn.running_mean, pre.mean((0, 2, 3)), atol=1e-4)
    assert torch.equal(adapted.features[0].conv.weight, model.features[0].conv.weight)
    assert torch.equal(model.features[0].norm.running_mean, torch.zeros(4))


def test_run_methods_and_gap(glyph_split):
    metrics, results = run_methods(glyph_split, ["adabn", "target-supervised"], backbone_kwargs=TINY,
                                   config=AdaptConfig(steps=4, batch_size=8, progress=False))
    assert list(metrics) == ["source-only", "adabn", "target-supervised"]
    gap = metrics["source-only"]["gap_recovered"]
    assert gap == 0.0 or math.isnan(gap)
    assert gap_recovered(0.5, 0.2, 0.6) == pytest.approx(0.75)
    assert math.isnan(gap_recovered(0.5, 0.6, 0.6))
    with pytest.raises(ConfigError, match="unknown method"):
        run_methods(glyph_split, ["mmd"])


# ------------------------------------------------------------------------------------ bad input


def test_bad_input_is_a_clear_error(glyph_split):
    s = glyph_split
    cfg = DANNConfig(steps=1, batch_size=4, progress=False)
    with pytest.raises(ConfigError, match="same input shape.*3x16x16.*1x16x16"):
        train_dann("conv4", s.source_train, torch.rand(8, 1, 16, 16), cfg, backbone_kwargs=TINY)
    with pytest.raises(ConfigError, match="target set is empty"):
        train_dann("conv4", s.source_train, torch.rand(0, 3, 16, 16), cfg, backbone_kwargs=TINY)
    other = make_target_domain(make_glyphs(5, 4, 16, seed=0), "mnistm")
    with pytest.raises(ConfigError, match="same label set"):
        train_dann("conv4", s.source_train, other, cfg, backbone_kwargs=TINY)
    src = train_source_only("conv4", s.source_train, AdaptConfig(steps=1, batch_size=4, progress=False),
                            backbone_kwargs=TINY).model
    with pytest.raises(ConfigError, match="same input shape"):
        train_adda(src, s.source_train, torch.rand(8, 3, 8, 8), ADDAConfig(steps=1, progress=False))
    with pytest.raises(ConfigError, match="target set is empty"):
        train_adda(src, s.source_train, s.target_train.select(torch.zeros(len(s.target_train), dtype=torch.bool)))
    with pytest.raises(ConfigError, match="steps"):
        DANNConfig(steps=0).validate()
    with pytest.raises(ConfigError, match="shift"):
        make_target_domain(torch.rand(2, 1, 8, 8), "fog")
    only_one_class = LabelledImages(s.target_train.images[:4], torch.full((4,), 3), s.source_train.class_names)
    keep = s.source_train.targets != 3
    with pytest.raises(ConfigError, match="labels that no source sample has"):
        train_dann("conv4", s.source_train.select(keep), only_one_class, cfg, backbone_kwargs=TINY)


# ----------------------------------------------------------------------------------- projection


def test_pca_and_plot(tmp_path):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 6, generator=gen), torch.randn(40, 6, generator=gen) + 3
    pa, pb = pca_2d(a, b)
    assert pa.shape == (50, 2) and pb.shape == (40, 2)
    # The first axis separates the two clouds.
    assert (pa[:, 0].mean() - pb[:, 0].mean()).abs() > 5
    path = plot_domain_features(tmp_path / "f.png", [("before", a, b), ("after", a, a)])
    assert path.stat().st_size > 1000
