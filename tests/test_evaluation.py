"""meta.evaluation: confidence intervals and the few-shot evaluation loop."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from meta.evaluation import confused_pairs, evaluate, mean_confidence_interval
from meta.maml import ANIL, MAML
from meta.protonet import ProtoNet
from meta.reptile import Reptile
from mtl import create_backbone
from mtl.errors import ConfigError


def test_mean_confidence_interval_hand_computed():
    # mean 2.5; sample variance ((1.5^2 + 0.5^2) * 2) / 3 = 5/3; half-width 1.96 * sqrt(5/3) / 2
    mean, half = mean_confidence_interval([1, 2, 3, 4])
    assert mean == 2.5
    assert half == pytest.approx(1.96 * math.sqrt(5 / 3) / 2, rel=1e-12)
    assert half == pytest.approx(1.2651746, abs=1e-7)
    # 600 accuracies, half right and half wrong: s = sqrt(600 * 0.25 / 599)
    mean, half = mean_confidence_interval([0.0, 1.0] * 300)
    assert mean == 0.5 and half == pytest.approx(1.96 * math.sqrt(150 / 599) / math.sqrt(600), rel=1e-12)
    assert mean_confidence_interval([3.0, 3.0, 3.0]) == (3.0, 0.0)
    assert mean_confidence_interval(torch.tensor([0.5, 0.7])) == pytest.approx((0.6, 1.96 * 0.1))
    z90 = 1.6448536269514722
    assert mean_confidence_interval([1, 2, 3, 4], confidence=0.9)[1] == pytest.approx(
        z90 * math.sqrt(5 / 3) / 2, rel=1e-9)


def test_mean_confidence_interval_edge_cases():
    mean, half = mean_confidence_interval([0.8])
    assert mean == 0.8 and math.isnan(half)
    with pytest.raises(ConfigError, match="at least one value"):
        mean_confidence_interval([])
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError, match=f"confidence must be in \\(0, 1\\), got {bad}"):
            mean_confidence_interval([1.0, 2.0], confidence=bad)


class FakeAlgo(torch.nn.Module):
    """Records the tasks it sees; accuracy is the first support value of the task."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.modes = []

    def evaluate_task(self, support_x, support_y, query_x, query_y):
        self.seen.append(float(support_x[0]))
        self.modes.append(self.training)
        return {"loss": 1.0 - float(support_x[0]), "accuracy": float(support_x[0])}


def fake_source(batch=4):
    def source(index):
        values = torch.tensor([(index * batch + i) % 2 for i in range(batch)], dtype=torch.float32)
        sx = values[:, None].repeat(1, 3)
        return SimpleNamespace(support_x=sx, support_y=torch.zeros(batch, 3, dtype=torch.long),
                               query_x=sx, query_y=torch.zeros(batch, 3, dtype=torch.long))
    return source


def test_evaluate_counts_tasks_and_restores_mode():
    algo = FakeAlgo()
    algo.train()
    result = evaluate(algo, fake_source(4), num_tasks=10, batch_size=4, progress=False)
    assert algo.seen == [0, 1] * 5  # 10 tasks in order, the last batch cut short
    assert algo.modes == [False] * 10 and algo.training
    assert result["num_tasks"] == 10
    assert result["accuracy"] == 0.5 and result["loss"] == 0.5
    assert result["ci95"] == pytest.approx(mean_confidence_interval([0, 1] * 5)[1])
    assert result["tasks_per_second"] > 0


def test_evaluate_errors():
    algo = FakeAlgo()
    with pytest.raises(ConfigError, match="num_tasks must be an integer >= 1, got 0"):
        evaluate(algo, fake_source(), num_tasks=0, progress=False)
    with pytest.raises(ConfigError, match="returned 4 tasks, expected batch_size=5"):
        evaluate(algo, fake_source(4), num_tasks=8, batch_size=5, progress=False)
    with pytest.raises(ConfigError, match="without attributes query_x, query_y"):
        evaluate(algo, lambda i: SimpleNamespace(support_x=torch.zeros(2, 1), support_y=torch.zeros(2, 1)),
                 num_tasks=2, progress=False)
    with pytest.raises(ConfigError, match="evaluate_task method"):
        evaluate(object(), fake_source(), progress=False)


def make_batch(index, tasks=4, ways=3, shots=2, queries=4, dim=4):
    g = torch.Generator().manual_seed(1000 + index)
    centres = torch.randn(tasks, ways, dim, generator=g) * 2

    def draw(n):
        y = torch.arange(ways).repeat_interleave(n)
        return centres[:, y] + 0.5 * torch.randn(tasks, ways * n, dim, generator=g), y.expand(tasks, -1)

    sx, sy = draw(shots)
    qx, qy = draw(queries)
    return SimpleNamespace(support_x=sx, support_y=sy, query_x=qx, query_y=qy)


def test_evaluate_real_algorithms_is_deterministic():
    torch.manual_seed(0)
    maml = MAML(create_backbone("mlp", in_features=4, hidden=(8,), num_classes=3), inner_lr=0.5,
                eval_inner_steps=3)
    proto = ProtoNet(create_backbone("mlp", in_features=4, hidden=(8,), num_classes=None))
    for algo in (maml, proto):
        first = evaluate(algo, make_batch, num_tasks=6, progress=False)
        second = evaluate(algo, make_batch, num_tasks=6, batch_size=4, progress=True)
        assert first["accuracy"] == second["accuracy"] and first["ci95"] == second["ci95"]
        assert 0.0 <= first["accuracy"] <= 1.0 and first["num_tasks"] == 6
        assert set(first) == {"accuracy", "loss", "ci95", "num_tasks", "tasks_per_second"}


def test_evaluate_regression_reports_mse():
    torch.manual_seed(0)
    algo = MAML(create_backbone("mlp", hidden=(8,)), inner_lr=0.01, loss="mse")

    def source(index):
        g = torch.Generator().manual_seed(index)
        x = torch.rand(2, 10, 1, generator=g) * 10 - 5
        amp = torch.rand(2, 1, 1, generator=g) * 4.9 + 0.1
        y = amp * torch.sin(x)
        return SimpleNamespace(support_x=x[:, :5], support_y=y[:, :5], query_x=x[:, 5:], query_y=y[:, 5:])

    result = evaluate(algo, source, num_tasks=5, progress=False)
    assert "accuracy" not in result and result["mse"] == result["loss"] > 0
    assert math.isfinite(result["ci95"])


def test_confidence_interval_with_a_diverged_task():
    mean, half = mean_confidence_interval([0.5, float("inf"), 0.7])
    assert mean == math.inf and math.isnan(half)
    mean, half = mean_confidence_interval([0.5, float("nan")])
    assert math.isnan(mean) and math.isnan(half)


class AlwaysFirst:
    """Predicts label 0 for every query: its confusions are known exactly."""

    def adapt(self, sx, sy):
        return lambda x: torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 3).float()


def labelled_batch(index):
    b = make_batch(index, tasks=2)
    b.classes = torch.tensor([[7, 8, 9], [9, 5, 7]])  # original class id of labels 0, 1, 2 per task
    return b


def test_confused_pairs_counts_each_error_once_by_class_pair():
    names = [f"c{i}" for i in range(10)]
    res = confused_pairs(AlwaysFirst(), labelled_batch, num_tasks=3, class_names=names, top=5, progress=False)
    # tasks 1 and 3 map 0,1,2 -> 7,8,9; task 2 maps them to 9,5,7; 4 queries per wrong class
    assert (res["errors"], res["queries"], res["num_tasks"]) == (24, 36, 3)
    assert res["accuracy"] == pytest.approx(12 / 36)
    got = {(r["a"], r["b"]): r["errors"] for r in res["pairs"]}
    assert got == {("c7", "c8"): 8, ("c7", "c9"): 8 + 4, ("c5", "c9"): 4}
    assert [r["errors"] for r in res["pairs"]] == [12, 8, 4]
    assert sum(r["share"] for r in res["pairs"]) == pytest.approx(1.0)


def test_confused_pairs_agrees_with_evaluate_and_checks_input():
    torch.manual_seed(0)
    proto = ProtoNet(create_backbone("mlp", in_features=4, hidden=(8,), num_classes=None))
    maml = MAML(create_backbone("mlp", in_features=4, hidden=(8,), num_classes=3), inner_lr=0.5)
    for algo in (proto, maml):
        res = confused_pairs(algo, labelled_batch, num_tasks=6, top=2, progress=False)
        ref = evaluate(algo, labelled_batch, num_tasks=6, progress=False)
        assert res["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-6)
        assert len(res["pairs"]) <= 2 and all(r["a"] <= r["b"] for r in res["pairs"])
    with pytest.raises(ConfigError, match="top must be"):
        confused_pairs(proto, labelled_batch, num_tasks=2, top=-1)
    with pytest.raises(ConfigError, match="without 'classes'"):
        confused_pairs(proto, make_batch, num_tasks=2, progress=False)
    with pytest.raises(ConfigError, match="adapt method"):
        confused_pairs(object(), labelled_batch, num_tasks=2)


@pytest.mark.parametrize("make", [
    lambda: MAML(create_backbone("mlp", in_features=4, hidden=(8,), num_classes=3), inner_lr=0.5,
                 eval_inner_steps=4),
    lambda: ANIL(create_backbone("mlp", in_features=4, hidden=(8,), num_classes=3), inner_lr=0.5,
                 eval_inner_steps=4),
    lambda: Reptile(create_backbone("mlp", in_features=4, hidden=(8,), num_classes=3), inner_lr=0.5,
                    eval_inner_steps=4),
])
def test_evaluate_at_several_step_counts_equals_separate_runs(make):
    """``at_steps`` reports, from one adaptation per task, what separate evaluations with that
    many steps give (mean and interval), and leaves the headline at ``eval_inner_steps``."""
    torch.manual_seed(0)
    algo = make()
    both = evaluate(algo, make_batch, num_tasks=8, progress=False, at_steps=[1, 2, 4])
    headline = evaluate(algo, make_batch, num_tasks=8, progress=False)
    assert both["accuracy"] == headline["accuracy"] and both["ci95"] == headline["ci95"]
    assert both["loss"] == headline["loss"]
    for k in (1, 2, 4):
        algo.eval_inner_steps = k
        alone = evaluate(algo, make_batch, num_tasks=8, progress=False)
        assert both[f"accuracy@{k}"] == pytest.approx(alone["accuracy"], abs=1e-12)
        assert both[f"ci95@{k}"] == pytest.approx(alone["ci95"], abs=1e-12)
        assert both[f"loss@{k}"] == pytest.approx(alone["loss"], abs=1e-9)
    assert both["loss@1"] != both["loss@4"]  # the steps did something


def test_evaluate_at_steps_bad_values():
    maml = MAML(create_backbone("mlp", in_features=4, hidden=(8,), num_classes=3), inner_lr=0.5,
                eval_inner_steps=3)
    for bad, message in (([0, 2], "at_steps must hold integers in 1..3 .*got 0"),
                         ([4], "at_steps must hold integers in 1..3 .*got 4"),
                         ("2", "at_steps must be a sequence of integers in 1..3, got '2'")):
        with pytest.raises(ConfigError, match=message):
            evaluate(maml, make_batch, num_tasks=2, progress=False, at_steps=bad)
    proto = ProtoNet(create_backbone("mlp", in_features=4, hidden=(8,), num_classes=None))
    with pytest.raises(ConfigError, match="at_steps needs an algorithm with inner steps .*got ProtoNet"):
        evaluate(proto, make_batch, num_tasks=2, progress=False, at_steps=[1])


@pytest.mark.parametrize("make", [
    lambda: MAML(create_backbone("conv4", in_channels=1, image_size=16, hidden=4, num_classes=3), inner_lr=0.3,
                 inner_steps=1, eval_inner_steps=3),
    lambda: ANIL(create_backbone("mlp", in_features=4, hidden=(8,), num_classes=3), inner_lr=0.5,
                 eval_inner_steps=4),
    lambda: Reptile(create_backbone("mlp", in_features=4, hidden=(8,), num_classes=3), inner_lr=0.5,
                    eval_inner_steps=4),
])
def test_evaluate_on_task_workers_equals_one_thread(make):
    torch.manual_seed(0)
    algo = make()
    conv = isinstance(algo, MAML) and not isinstance(algo, ANIL)

    def source(index):
        batch = make_batch(index)
        if conv:  # images for the conv4: each 4-vector spread over a 16x16 picture
            for name in ("support_x", "query_x"):
                x = getattr(batch, name)
                setattr(batch, name, x.repeat_interleave(64, -1).reshape(*x.shape[:2], 1, 16, 16))
        return batch

    algo.train()  # evaluate switches to eval mode (eval_inner_steps) for every task, the last ones too
    one = evaluate(algo, source, num_tasks=11, progress=False, at_steps=[1, 2])
    threaded = evaluate(algo, source, num_tasks=11, progress=False, at_steps=[1, 2], workers=3)
    assert algo.training
    for key in ("accuracy", "ci95", "loss", "accuracy@1", "loss@2"):
        assert threaded[key] == pytest.approx(one[key], abs=1e-6)
    assert threaded["num_tasks"] == 11
    with pytest.raises(ConfigError, match="workers must be an integer >= 1, got 0"):
        evaluate(algo, source, num_tasks=2, progress=False, workers=0)


def test_task_workers_keep_eval_mode_until_the_last_task_is_done():
    import time

    class Slow(FakeAlgo):
        def evaluate_task(self, support_x, support_y, query_x, query_y):
            time.sleep(0.02)  # still running when the last task has been handed out
            return super().evaluate_task(support_x, support_y, query_x, query_y)

    algo = Slow()
    algo.train()
    result = evaluate(algo, fake_source(4), num_tasks=10, progress=False, workers=3)
    assert algo.modes == [False] * 10 and algo.training
    assert sorted(algo.seen) == sorted([0, 1] * 5) and result["accuracy"] == 0.5
