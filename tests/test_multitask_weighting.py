"""Loss weightings: PCGrad projections, MGDA/CAGrad solvers, uncertainty, GradNorm, DWA, fixed, fallbacks."""

import itertools
import math

import pytest
import torch
from torch import nn

from mtl.errors import ConfigError
from mtl.multitask import (
    DWA,
    MGDA,
    CAGrad,
    GradNorm,
    MultiTaskConfig,
    MultiTaskData,
    MultiTaskModel,
    MultiTaskTrainer,
    PCGrad,
    TaskSpec,
    UncertaintyWeighting,
    build_model,
    make_weighting,
)
from mtl.multitask.weighting import cagrad_direction, min_norm_weights, pcgrad_combine


def test_pcgrad_projects_conflicting_gradients():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 . g2 = -1 < 0
    combined = pcgrad_combine(torch.stack([g1, g2]), torch.Generator().manual_seed(0))
    # g1' = g1 - (g1.g2)/|g2|^2 g2 = (0.5, 0.5);  g2' = g2 - (g2.g1)/|g1|^2 g1 = (0, 1)
    assert torch.allclose(combined, torch.tensor([0.5, 1.5]))
    g1p = torch.tensor([0.5, 0.5])
    assert float(g1p @ g2) == pytest.approx(0.0)
    assert float(combined @ g1) > 0 and float(combined @ g2) > 0  # no task's loss goes up to first order


def test_pcgrad_leaves_agreeing_gradients_alone():
    grads = torch.tensor([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.2, 3.0]])  # all dot products >= 0
    assert torch.allclose(pcgrad_combine(grads), grads.sum(0))


def test_pcgrad_three_tasks_every_projected_gradient_stops_conflicting():
    torch.manual_seed(1)
    grads = torch.randn(3, 5)
    grads[1] = -grads[0] + 0.1 * torch.randn(5)  # a strong conflict
    out = pcgrad_combine(grads, torch.Generator().manual_seed(3))
    assert not torch.allclose(out, grads.sum(0))
    assert torch.isfinite(out).all()


class TwoLinearLosses(MultiTaskModel):
    """A shared vector theta and one private scalar per task; L_t = theta . a_t + c_t * private_t."""

    def __init__(self, a, b):
        super().__init__([TaskSpec("a", 1, "regression"), TaskSpec("b", 1, "regression")])
        self.theta = nn.Parameter(torch.zeros(2))
        self.private = nn.ParameterDict({"a": nn.Parameter(torch.zeros(1)), "b": nn.Parameter(torch.zeros(1))})
        self.heads["a"], self.heads["b"] = nn.Linear(1, 1), nn.Linear(1, 1)
        self.dirs = {"a": a, "b": b}

    def losses(self):
        return {t: self.theta @ self.dirs[t] + 3.0 * self.private[t].sum() for t in ("a", "b")}

    def shared_parameters(self):
        return [self.theta]


def test_pcgrad_weighting_changes_only_the_shared_gradient():
    model = TwoLinearLosses(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
    w = PCGrad()
    w.bind(model.tasks)
    w.backward(model.losses(), model)
    assert torch.allclose(model.theta.grad, torch.tensor([0.5, 1.5]))
    assert float(model.private["a"].grad) == 3.0 and float(model.private["b"].grad) == 3.0


def test_mgda_min_norm_solutions():
    def solve(grads):
        grads = torch.tensor(grads)
        return min_norm_weights(grads @ grads.T)

    assert torch.allclose(solve([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert torch.allclose(solve([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([1.0, 0.0], dtype=torch.float64))
    # three tasks: compare with a fine grid over the simplex
    torch.manual_seed(0)
    grads = torch.randn(3, 4).double()
    alpha = min_norm_weights(grads @ grads.T)
    best = min((torch.tensor([i, j, 100 - i - j], dtype=torch.float64) / 100 @ grads).norm()
               for i, j in itertools.product(range(101), range(101)) if i + j <= 100)
    assert float((alpha @ grads).norm()) <= float(best) + 1e-6
    assert float(alpha.sum()) == pytest.approx(1.0) and float(alpha.min()) >= 0


def test_mgda_weighting_finds_the_common_descent_direction():
    model = TwoLinearLosses(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    w = MGDA()
    w.bind(model.tasks)
    weights = w.backward(model.losses(), model)
    # min-norm point of {(1,0), (0,2)}: alpha = (0.8, 0.2) -> (0.8, 0.4); times T = 2
    assert weights["a"] == pytest.approx(1.6) and weights["b"] == pytest.approx(0.4)
    assert torch.allclose(model.theta.grad, torch.tensor([1.6, 0.8]))


def test_cagrad_reduces_to_the_mean_for_c_zero_and_helps_the_worst_task():
    grads = torch.tensor([[1.0, 0.0], [-0.8, 0.3]])
    d0, _ = cagrad_direction(grads, c=0.0)
    assert torch.allclose(d0, grads.mean(0), atol=1e-6)
    d, w = cagrad_direction(grads, c=0.5)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    worst = lambda v: float((grads @ v).min() / v.norm())  # noqa: E731
    assert worst(d) > worst(grads.mean(0))


def _synthetic(n=256, scale_b=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    return MultiTaskData(x, {"a": x[:, :1] - x[:, 1:2], "b": scale_b * (x[:, 2:3] * x[:, 3:4])
                             + scale_b * torch.randn(n, 1, generator=g)})


REG = [TaskSpec("a", 1, "regression"), TaskSpec("b", 1, "regression")]


def _fit(weighting, epochs=3, arch="hard", data=None, **cfg):
    torch.manual_seed(0)
    model = build_model(arch, REG, "mlp", {"in_features": 5, "hidden": (16,)})
    trainer = MultiTaskTrainer(model, REG, data or _synthetic(), None, weighting,
                               MultiTaskConfig(epochs=epochs, batch_size=32, lr=1e-2, progress=False, **cfg))
    trainer.fit()
    return trainer


def test_uncertainty_weights_move_and_favour_the_less_noisy_task():
    w = UncertaintyWeighting()
    trainer = _fit(w, epochs=6, data=_synthetic(scale_b=3.0))
    log_vars = {k: float(v.detach()) for k, v in w.log_vars.items()}
    assert all(abs(v) > 0.01 for v in log_vars.values())  # both moved away from their start, 0
    assert log_vars["b"] > 0.2  # towards log(loss) of the noisy task (Kendall et al.'s optimum)
    weights = w.current_weights()
    assert weights["a"] > weights["b"]  # the noisy task b gets the smaller weight (larger sigma)
    assert trainer.step == 6 * 8


def test_gradnorm_weights_move_and_keep_their_sum():
    w = GradNorm(alpha=1.5)
    _fit(w, epochs=3, data=_synthetic(scale_b=3.0))
    weights = w.current_weights()
    assert sum(weights.values()) == pytest.approx(2.0, abs=1e-5)
    assert abs(weights["a"] - 1.0) > 0.01 and min(weights.values()) > 0


def test_dwa_follows_the_loss_ratios():
    w = DWA(temperature=2.0)
    w.bind(REG)
    assert w.current_weights() == {"a": 1.0, "b": 1.0}
    w.end_epoch({"a": 1.0, "b": 1.0})
    w.end_epoch({"a": 0.5, "b": 1.0})  # a improves fast, b stalls -> b gets more weight
    e_a, e_b = math.exp(0.5 / 2), math.exp(1.0 / 2)
    want = {"a": 2 * e_a / (e_a + e_b), "b": 2 * e_b / (e_a + e_b)}
    assert w.current_weights() == pytest.approx(want)


def test_fixed_weights_are_used_and_checked():
    trainer = _fit(make_weighting("fixed", weights={"a": 2.0, "b": 0.0}), epochs=1)
    assert trainer.weighting.current_weights() == {"a": 2.0, "b": 0.0}
    with pytest.raises(ConfigError, match=r"missing \['b'\], unknown \['c'\]"):
        _fit(make_weighting("fixed", weights={"a": 1.0, "c": 1.0}), epochs=1)
    with pytest.raises(ConfigError, match=">= 0"):
        make_weighting("fixed", weights={"a": -1.0, "b": 1.0})


def test_unknown_weighting_and_bad_options():
    with pytest.raises(ConfigError, match="unknown weighting 'nash'; choose one of equal, fixed, uncertainty"):
        make_weighting("nash")
    with pytest.raises(ConfigError, match="does not accept"):
        make_weighting("pcgrad", alpha=1.0)
    with pytest.raises(ConfigError, match="temperature"):
        make_weighting("dwa", temperature=0)
    with pytest.raises(ConfigError, match="normalization"):
        MGDA("l1")


@pytest.mark.parametrize("name", ["pcgrad", "mgda", "cagrad", "gradnorm"])
def test_gradient_methods_fall_back_to_the_sum_without_shared_parameters(name):
    with pytest.warns(UserWarning, match="plain sum"):
        trainer = _fit(make_weighting(name), epochs=1, arch="single")
    assert trainer.step == 8


@pytest.mark.parametrize("name", ["equal", "uncertainty", "gradnorm", "dwa", "pcgrad", "mgda", "cagrad"])
@pytest.mark.parametrize("arch", ["hard", "mmoe", "crossstitch"])
def test_every_weighting_trains_every_shared_architecture(name, arch):
    data = _synthetic(64)
    torch.manual_seed(0)
    model = build_model(arch, REG, "mlp", {"in_features": 5, "hidden": (8,)})
    trainer = MultiTaskTrainer(model, REG, data, None, name,
                               MultiTaskConfig(epochs=2, batch_size=32, lr=1e-2, progress=False))
    before = trainer.evaluate(data)
    trainer.fit()
    after = trainer.evaluate(data)
    assert after["a"]["mse"] < before["a"]["mse"]


def test_cagrad_weighting_on_constructed_conflict():
    model = TwoLinearLosses(torch.tensor([1.0, 0.0]), torch.tensor([-0.8, 0.3]))
    w = CAGrad(c=0.5)
    w.bind(model.tasks)
    w.backward(model.losses(), model)
    g = model.theta.grad
    assert float(g @ torch.tensor([1.0, 0.0])) > 0 and float(g @ torch.tensor([-0.8, 0.3])) > 0
