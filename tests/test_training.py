"""The shared supervised training loop."""

import pytest
import torch

from mtl.backbones import create_backbone
from mtl.data import LabelledImages
from mtl.errors import ConfigError
from mtl.training import evaluate_classifier, predict_logits, train_classifier
from mtl.utils import Budget


def blobs(n_per_class=40, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 1, 4, 4, generator=g) * 3
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[y] + 0.5 * torch.randn(len(y), 1, 4, 4, generator=g)
    return LabelledImages(x, y)


def test_learns_a_separable_problem():
    data = blobs()
    model = create_backbone("mlp", in_features=16, hidden=(16,), num_classes=3)
    before = evaluate_classifier(model, data)["accuracy"]
    hist = train_classifier(model, data, epochs=15, batch_size=16, lr=1e-2, val=data, progress=False)
    assert hist.val_accuracy[-1] > 0.95 > before
    assert hist.train_loss[-1] < hist.train_loss[0]


def test_frozen_parameters_stay_and_have_no_optimizer_state():
    data = blobs()
    model = create_backbone("mlp", in_features=16, hidden=(16,), num_classes=3)
    frozen = model.features.fc1.weight
    frozen.requires_grad_(False)
    copy = frozen.detach().clone()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    train_classifier(model, data, epochs=2, optimizer=opt, progress=False)
    assert torch.equal(frozen, copy)
    assert frozen not in opt.state


def test_budget_and_determinism():
    data = blobs()
    a = create_backbone("mlp", in_features=16, hidden=(8,), num_classes=3)
    b = create_backbone("mlp", in_features=16, hidden=(8,), num_classes=3)
    b.load_state_dict(a.state_dict())
    ha = train_classifier(a, data, epochs=5, budget=Budget(iterations=3), progress=False)
    train_classifier(b, data, epochs=5, budget=Budget(iterations=3), progress=False)
    assert ha.steps == 3
    assert torch.equal(predict_logits(a, data.images), predict_logits(b, data.images))


def test_bad_input():
    data = blobs()
    model = create_backbone("mlp", in_features=16, hidden=(8,), num_classes=3)
    with pytest.raises(ConfigError, match="epochs must be a positive integer, got 0"):
        train_classifier(model, data, epochs=0)
    with pytest.raises(ConfigError, match="lr must be a finite number > 0"):
        train_classifier(model, data, lr=-1.0)
    with pytest.raises(ConfigError, match="optimizer must be one of adam, sgd"):
        train_classifier(model, data, optimizer="rmsprop")
    with pytest.raises(ConfigError, match="became"):
        train_classifier(model, data, lr=1e30, optimizer="sgd", progress=False, epochs=3)
