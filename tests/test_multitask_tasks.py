"""Task specs, masked losses, metrics, Delta-m and multi-task data checks."""

import math

import pytest
import torch

from mtl.errors import ConfigError
from mtl.multitask import MultiTaskData, TaskSpec, delta_m, masked_task_loss, task_metric


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_masked_classification_labels_contribute_nothing():
    torch.manual_seed(0)
    spec = TaskSpec("c", 5)
    net = torch.nn.Linear(3, 5)
    x = torch.randn(8, 3)
    y = torch.tensor([0, -1, 2, 4, -1, 1, -1, 3])
    loss, count = masked_task_loss(spec, net(x), y)
    keep = y >= 0
    ref = torch.nn.functional.cross_entropy(net(x[keep]), y[keep])
    assert count == 5 and torch.allclose(loss, ref)
    g_masked = _grads(net, masked_task_loss(spec, net(x), y)[0])
    # whatever the inputs of the unlabelled samples are, the gradient is the same
    x2 = x.clone()
    x2[~keep] = 100 * torch.randn(int((~keep).sum()), 3)
    g_other = _grads(net, masked_task_loss(spec, net(x2), y)[0])
    g_ref = _grads(net, torch.nn.functional.cross_entropy(net(x[keep]), y[keep]))
    for a, b, c in zip(g_masked, g_other, g_ref):
        assert torch.allclose(a, c) and torch.allclose(b, c)


def test_masked_regression_nan_and_explicit_mask():
    torch.manual_seed(0)
    spec = TaskSpec("r", 2, "regression")
    net = torch.nn.Linear(3, 2)
    x = torch.randn(6, 3)
    y = torch.randn(6, 2)
    y[1, 0] = math.nan  # a NaN anywhere in a row marks it missing
    mask = torch.tensor([True, True, True, False, True, True])
    loss, count = masked_task_loss(spec, net(x), y, mask)
    keep = torch.tensor([True, False, True, False, True, True])
    ref = torch.nn.functional.mse_loss(net(x[keep]), y[keep])
    assert count == 4 and torch.allclose(loss, ref)
    g = _grads(net, loss)
    assert all(torch.isfinite(t).all() for t in g)
    for a, b in zip(g, _grads(net, torch.nn.functional.mse_loss(net(x[keep]), y[keep]))):
        assert torch.allclose(a, b)


def test_all_missing_gives_zero_loss_and_zero_gradient():
    spec = TaskSpec("c", 3)
    net = torch.nn.Linear(2, 3)
    loss, count = masked_task_loss(spec, net(torch.randn(4, 2)), torch.full((4,), -1))
    assert count == 0 and float(loss.detach()) == 0.0
    for g in _grads(net, loss):
        assert torch.count_nonzero(g) == 0


def test_metrics_over_labelled_only():
    spec = TaskSpec("c", 3)
    out = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])
    value, count = task_metric(spec, out, torch.tensor([0, 0, 2, -1]))
    assert count == 3 and value == pytest.approx(2 / 3)
    reg = TaskSpec("r", 1, "regression", metric="mae")
    value, _ = task_metric(reg, torch.tensor([[1.0], [2.0]]), torch.tensor([2.0, math.nan]))
    assert value == pytest.approx(1.0)


def test_delta_m_signs():
    tasks = [TaskSpec("acc", 4), TaskSpec("err", 1, "regression")]
    # accuracy 0.5 -> 0.8 is +60 %, mse 2.0 -> 1.0 is +50 % (lower is better)
    assert delta_m({"acc": 0.8, "err": 1.0}, {"acc": 0.5, "err": 2.0}, tasks) == pytest.approx(55.0)
    assert delta_m({"acc": 0.5, "err": 2.0}, {"acc": 0.5, "err": 2.0}, tasks) == 0.0
    with pytest.raises(ConfigError, match="do not match"):
        delta_m({"acc": 0.8}, {"acc": 0.5, "err": 2.0}, tasks)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "a.b", "num_outputs": 2}, "not allowed"),
    ({"name": "t", "num_outputs": 0}, "num_outputs"),
    ({"name": "t", "num_outputs": 2, "kind": "ranking"}, "kind must be one of"),
    ({"name": "t", "num_outputs": 2, "loss": "mse"}, "not available for classification"),
    ({"name": "t", "num_outputs": 2, "kind": "regression", "metric": "accuracy"}, "not available for regression"),
])
def test_bad_task_specs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TaskSpec(**kwargs)


def test_head_too_small_for_labels_and_wrong_regression_width():
    with pytest.raises(ConfigError, match="labels go up to 12 but its head has 10 outputs"):
        TaskSpec("digit", 10).check_targets(torch.tensor([0, 12, 3]))
    with pytest.raises(ConfigError, match="3 values per sample but its head has 2"):
        TaskSpec("r", 2, "regression").check_targets(torch.zeros(4, 3))
    with pytest.raises(ConfigError, match="-1 for missing"):
        TaskSpec("digit", 10).check_targets(torch.tensor([0, -3]))


def test_data_names_must_match_tasks():
    zeros = torch.zeros(4, dtype=torch.long)
    data = MultiTaskData(torch.zeros(4, 2), {"a": zeros, "b": zeros})
    with pytest.raises(ConfigError, match=r"missing \['c'\], unknown \['b'\]"):
        data.check([TaskSpec("a", 2), TaskSpec("c", 2)])
    with pytest.raises(ConfigError, match="rows"):
        MultiTaskData(torch.zeros(4, 2), {"a": torch.zeros(3)})


def test_drop_labels_masks_without_touching_targets():
    y = torch.arange(1000) % 7
    data = MultiTaskData(torch.zeros(1000, 1), {"a": y.clone(), "b": y.clone()})
    dropped = data.drop_labels({"a": 0.75, "b": 0.0}, seed=1)
    counts = dropped.labelled_counts([TaskSpec("a", 7), TaskSpec("b", 7)])
    assert 200 < counts["a"] < 300 and counts["b"] == 1000
    assert torch.equal(dropped.targets["a"], y)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        data.drop_labels(1.0)
