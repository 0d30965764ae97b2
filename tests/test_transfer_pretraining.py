"""Greedy layer-wise pre-training: auto-encoders per layer, RBMs for MLPs."""

from __future__ import annotations

import pytest
import torch

from mtl.backbones import create_backbone
from mtl.errors import ConfigError
from mtl.transfer import PretrainConfig, greedy_pretrain, layer_units


def images(n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(6)
    base = (torch.rand(4, 1, 28, 28, generator=g) > 0.7).float()
    return base[torch.arange(n) % 4] * (torch.rand(n, 1, 28, 28, generator=g) > 0.1)


def test_units_group_parameter_free_layers_with_their_layer():
    mlp = create_backbone("mlp", in_features=784, hidden=[16, 8])
    assert [n for n, _ in layer_units(mlp)] == ["fc1", "fc2"]
    assert len(layer_units(mlp)[0][1]) == 3  # flatten, fc1, act1
    conv = create_backbone("conv4", hidden=4)
    assert [n for n, _ in layer_units(conv)] == ["block1", "block2", "block3", "block4"]


def test_autoencoder_pretraining_lowers_reconstruction_error_and_changes_every_layer():
    torch.manual_seed(0)
    model = create_backbone("conv4", hidden=4, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reports = greedy_pretrain(model, images(), PretrainConfig(epochs=4, lr=1e-2, noise=0.2))
    assert [r.layer for r in reports] == ["block1", "block2", "block3", "block4"]
    assert reports[0].final_loss < reports[0].first_loss
    for block in ("block1", "block4"):
        name = f"features.{block}.conv.weight"
        assert not torch.equal(before[name], model.state_dict()[name])
    assert torch.equal(before["head.weight"], model.state_dict()["head.weight"])


def test_rbm_pretraining_on_an_mlp():
    torch.manual_seed(0)
    model = create_backbone("mlp", in_features=784, hidden=[32, 16], num_classes=3)
    reports = greedy_pretrain(model, images(), PretrainConfig(method="rbm", epochs=6, rbm_lr=0.1))
    assert [r.method for r in reports] == ["rbm", "rbm"]
    assert reports[0].final_loss < reports[0].first_loss


def test_rbm_refuses_convolutions_and_bad_config():
    with pytest.raises(ConfigError, match="rbm.*block1"):
        greedy_pretrain(create_backbone("conv4", hidden=4), images(), PretrainConfig(method="rbm", epochs=1))
    with pytest.raises(ConfigError, match="method"):
        PretrainConfig(method="vae")
    with pytest.raises(ConfigError, match="noise"):
        PretrainConfig(noise=1.0)
