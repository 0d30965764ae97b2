"""Freezing by name, freezing below a layer, stop-gradients, discriminative rates, gradual unfreezing."""

from __future__ import annotations

import pytest
import torch

from mtl.backbones import create_backbone
from mtl.data import LabelledImages
from mtl.errors import ConfigError
from mtl.training import train_classifier
from mtl.transfer import (
    GradualUnfreezing,
    discriminative_param_groups,
    freeze,
    freeze_below,
    frozen_names,
    layer_groups,
    stop_gradient_after,
    trainable_names,
    unfreeze,
)


def tiny_conv(num_classes: int = 3):
    return create_backbone("conv4", hidden=4, num_classes=num_classes)


def toy_data(n: int = 24, classes: int = 3) -> LabelledImages:
    g = torch.Generator().manual_seed(1)
    return LabelledImages(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % classes)


def test_freeze_by_pattern_selects_exactly_the_matching_names():
    model = tiny_conv()
    names = freeze(model, r"block[12]\.")
    assert names and all(("block1." in n or "block2." in n) for n in names)
    assert set(frozen_names(model)) == set(names)
    assert all("block1." not in n and "block2." not in n for n in trainable_names(model))
    unfreeze(model, r"block2\.")
    assert all("block1." in n for n in frozen_names(model))


def test_frozen_parameters_and_batchnorm_stats_unchanged_after_training_and_no_optimizer_state():
    model = tiny_conv()
    freeze(model, r"^features\.block[123]\.")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    train_classifier(model, toy_data(), epochs=2, batch_size=8, optimizer=opt, progress=False)
    after = model.state_dict()
    frozen_prefixes = ("features.block1.", "features.block2.", "features.block3.")
    for name, value in before.items():
        same = torch.equal(value, after[name])
        if name.startswith(frozen_prefixes):
            assert same, f"{name} changed although frozen"
    assert not torch.equal(before["features.block4.conv.weight"], after["features.block4.conv.weight"])
    assert not torch.equal(before["features.block4.norm.running_mean"], after["features.block4.norm.running_mean"])
    params = dict(model.named_parameters())
    with_state = {n for n, p in params.items() if p in opt.state}
    assert with_state and all(not n.startswith(frozen_prefixes) for n in with_state)


def test_freeze_below_is_inclusive_and_accepts_short_names():
    model = tiny_conv()
    frozen = freeze_below(model, "block2")
    assert {n.split(".")[1] for n in frozen} == {"block1", "block2"}
    frozen = freeze_below(model, "features.block2", inclusive=False)
    assert {n.split(".")[1] for n in frozen} == {"block1"}
    with pytest.raises(ConfigError, match="block9"):
        freeze_below(model, "block9")


def test_pattern_matching_nothing_is_refused_with_the_names():
    model = tiny_conv()
    with pytest.raises(ConfigError, match=r"hidden\[123\].*features\.block1"):
        freeze(model, "hidden[123]")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        freeze(model, "block(")


def test_stop_gradient_blocks_gradients_below_the_cut():
    model = tiny_conv()
    handle = stop_gradient_after(model, "features.block2")
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    assert model.features.block1.conv.weight.grad is None
    assert model.features.block3.conv.weight.grad is not None
    handle.remove()
    model.zero_grad()
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    assert model.features.block1.conv.weight.grad is not None


def test_discriminative_rates_decay_towards_the_input_and_skip_frozen():
    model = tiny_conv()
    freeze(model, r"block1\.")
    groups = discriminative_param_groups(model, 0.1, decay=2.0)
    names = [g["name"] for g in groups]
    assert names == ["features.block2", "features.block3", "features.block4", "head"]
    assert [g["lr"] for g in groups] == pytest.approx([0.1 / 8, 0.1 / 4, 0.1 / 2, 0.1])
    explicit = discriminative_param_groups(model, 0.1, lrs={r"^head": 1.0, r"block4": 0.5})
    assert {g["name"]: g["lr"] for g in explicit} == {"(default)": 0.1, r"block4": 0.5, r"^head": 1.0}
    with pytest.raises(ConfigError, match="block1"):
        discriminative_param_groups(model, 0.1, lrs={r"block1": 0.5})


def test_gradual_unfreezing_adds_one_layer_per_stage():
    model = tiny_conv()
    sched = GradualUnfreezing(every=2)
    assert sched.apply(model, 0) == ["head"]
    assert set(trainable_names(model)) == {"head.weight", "head.bias"}
    assert sched.apply(model, 3) == ["features.block4", "head"]
    assert sched.apply(model, 100) == [g for g, _ in layer_groups(model)]
    assert frozen_names(model) == []
    assert sched.num_stages(model) == 5
