"""Bottleneck features: the cache equals recomputation, keys follow weights and data, disk round trip."""

from __future__ import annotations

import pytest
import torch

from mtl.backbones import create_backbone
from mtl.data import LabelledImages
from mtl.errors import ConfigError
from mtl.training import predict_logits, train_classifier
from mtl.transfer import FeatureCache, freeze_below, split_at, train_on_features


def model():
    torch.manual_seed(3)
    return create_backbone("conv4", hidden=4, num_classes=3)


def data(n: int = 24) -> LabelledImages:
    g = torch.Generator().manual_seed(4)
    return LabelledImages(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 3)


def test_split_shares_modules_and_composes_to_the_model():
    m = model().eval()
    parts = split_at(m, "block2")
    x = torch.rand(5, 1, 28, 28)
    assert torch.allclose(parts.upper(parts.lower(x)), m(x))
    assert parts.lower[0] is m.features.block1
    with pytest.raises(ConfigError, match="features.block4"):
        split_at(m, "block7")


def test_cached_features_equal_recomputed_ones_and_key_tracks_weights_and_data(tmp_path):
    m = model()
    lower = split_at(m, "block3").lower
    d = data()
    cache = FeatureCache(tmp_path)
    first = cache.get(lower, d.images)
    assert torch.equal(first, predict_logits(lower, d.images))
    assert cache.get(lower, d.images) is first and (cache.hits, cache.misses) == (1, 1)
    other = FeatureCache(tmp_path)  # a new process would find the file
    assert torch.equal(other.get(lower, d.images), first) and (other.hits, other.misses) == (1, 0)
    with torch.no_grad():
        m.features.block1.conv.weight.add_(0.5)
    changed = cache.get(lower, d.images)
    assert cache.misses == 2 and not torch.equal(changed, first)
    cache.get(lower, d.images[:-1])
    assert cache.misses == 3


def test_training_on_cache_equals_training_with_frozen_lower_layers():
    d = data()
    a, b = model(), model()
    kwargs = {"epochs": 3, "batch_size": 8, "lr": 0.05, "optimizer": "sgd", "seed": 0, "progress": False}
    train_on_features(a, "block2", d, **kwargs)
    freeze_below(b, "block2")
    train_classifier(b, d, **kwargs)
    for name, value in a.state_dict().items():
        assert torch.allclose(value, b.state_dict()[name], atol=1e-5), name
