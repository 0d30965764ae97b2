"""The common backbone registry and the built-in backbones."""

import re

import pytest
import torch
from torch import nn

from mtl.backbones import Backbone, create_backbone, describe_backbone, list_backbones, register_backbone
from mtl.errors import ConfigError


def test_builtins_are_registered():
    assert {"mlp", "conv4", "resnet12"} <= set(list_backbones())
    assert list_backbones("conv*") == ["conv4"]
    assert "Finn" in describe_backbone("mlp")


def test_unknown_name_lists_close_matches():
    with pytest.raises(ConfigError, match=r"unknown backbone 'conv5'; did you mean conv4"):
        create_backbone("conv5")
    with pytest.raises(ConfigError, match="registered: .*resnet12"):
        create_backbone("totally-unknown")


def test_unknown_keyword_is_a_clear_error():
    with pytest.raises(ConfigError, match="backbone 'conv4' does not accept"):
        create_backbone("conv4", widht=3)


def test_register_user_backbone_and_refuse_duplicates():
    @register_backbone("tiny_test_net", overwrite=True)
    def tiny_test_net(num_classes: int | None = None) -> Backbone:
        """A two-layer test network."""
        return Backbone(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), 3, (4,), num_classes)

    model = create_backbone("tiny_test_net", num_classes=2)
    assert model.backbone_name == "tiny_test_net" and model.backbone_kwargs == {"num_classes": 2}
    assert model(torch.randn(5, 4)).shape == (5, 2)
    with pytest.raises(ConfigError, match="already registered"):
        register_backbone("tiny_test_net")(lambda: None)


def test_sinusoid_mlp_is_1_40_40_1():
    model = create_backbone("mlp")
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]
    assert model(torch.randn(7, 1)).shape == (7, 1)


@pytest.mark.parametrize(
    "kwargs, shape, features",
    [({}, (1, 28, 28), 64), ({"in_channels": 3, "image_size": 84}, (3, 84, 84), 32 * 5 * 5),
     ({"final_pool": False}, (1, 28, 28), 64 * 3 * 3)],
)
def test_conv4_sizes(kwargs, shape, features):
    model = create_backbone("conv4", num_classes=5, **kwargs)
    assert model.out_features == features
    assert model(torch.randn(2, *shape)).shape == (2, 5)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(c.kernel_size == (3, 3) for c in convs)
    assert convs[0].out_channels == (64 if shape[0] == 1 else 32)


def test_resnet12_features_and_any_size():
    model = create_backbone("resnet12", widths=(8, 16, 16, 32))
    assert model.out_features == 32
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 32)
    assert model(torch.randn(2, 1, 40, 40)).shape == (2, 32)


def test_parameter_names_are_stable_and_head_is_separate():
    model = create_backbone("conv4", num_classes=5)
    names = [n for n, _ in model.named_parameters()]
    assert names[0] == "features.block1.conv.weight"
    assert names[-2:] == ["head.weight", "head.bias"]
    assert all(re.match(r"^(features|head)\.", n) for n in names)


def test_reset_head_keeps_trunk():
    model = create_backbone("conv4", num_classes=5)
    trunk = {k: v.clone() for k, v in model.named_parameters() if k.startswith("features.")}
    model.reset_head(2)
    assert model.num_classes == 2
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 2)
    params = dict(model.named_parameters())
    for k, v in trunk.items():
        assert torch.equal(params[k], v)
    model.reset_head(None)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 64)
    with pytest.raises(ConfigError, match="num_classes must be a positive integer, got 0"):
        model.reset_head(0)


def test_maml_batchnorm_convention_has_no_running_stats():
    model = create_backbone("conv4", track_running_stats=False)
    assert not list(model.buffers())


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("conv4", {"image_size": 8}, "at least 16x16, got image_size=8x8"),
        ("conv4", {"image_size": 4, "final_pool": False}, "at least 8x8, got image_size=4x4"),
        ("conv4", {"final_pool": "no"}, "final_pool must be True or False, got 'no'"),
        ("resnet12", {"image_size": 10}, "at least 16x16"),
        ("conv4", {"in_channels": 0}, "in_channels must be a positive integer, got 0"),
        ("mlp", {"hidden": (40, -1)}, r"hidden\[1\] must be a positive integer, got -1"),
    ],
)
def test_impossible_sizes_are_refused(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_backbone(name, **kwargs)


def test_wrong_input_shape_names_both_shapes():
    model = create_backbone("conv4")
    with pytest.raises(ConfigError, match="conv4 expects inputs of 1x28x28, got 3x84x84"):
        model(torch.randn(1, 3, 84, 84))


def test_torchvision_wrapper_with_a_stand_in_module(monkeypatch):
    """The torchvision adapter (resnet18's fc becomes our head), checked without torchvision installed."""
    import sys
    import types

    from mtl.backbones import models, registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # restored after the test
    monkeypatch.setattr(registry, "_DESCRIPTIONS", dict(registry._DESCRIPTIONS))

    class FakeResNet(nn.Module):
        def __init__(self, weights=None):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flat = nn.Flatten()
            self.fc = nn.Linear(4, 1000)

        def forward(self, x):
            return self.fc(self.flat(self.pool(self.conv1(x))))

    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(resnet18=FakeResNet, resnet34=FakeResNet, resnet50=FakeResNet)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.models", fake.models)
    models._register_torchvision()
    net = create_backbone("resnet18", num_classes=2, image_size=32)
    assert net.out_features == 4 and isinstance(net.features.fc, nn.Identity)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 2)
    gray = create_backbone("resnet18", in_channels=1, image_size=28)
    assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 4)
