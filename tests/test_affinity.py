"""Task affinity (mtl.affinity): synthetic tasks, TAG lookahead, transfer-matrix normalisation, grouping."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from mtl.affinity import (
    AffinityTrainer,
    TaskAffinity,
    TransferConfig,
    best_grouping,
    correlated_regression,
    glyph_sides,
    group_score,
    lookahead_affinity,
    normalised_gain,
    pairs_correlations,
    partitions,
    plot_affinity,
    rank_groupings,
    tag_affinity,
    train_groups,
    transfer_matrix,
)
from mtl.errors import ConfigError
from mtl.multitask import HardSharing, MultiTaskConfig, SingleTask, TaskSpec, masked_task_loss


# --- synthetic tasks with known correlations --------------------------------------------------------------------
def test_correlated_regression_weights_have_the_requested_cosines():
    p = [[1, 0.8, 0.0], [0.8, 1, -0.5], [0.0, -0.5, 1]]
    prob = correlated_regression(p, num_train=3000, num_val=10, num_test=10, input_dim=12, num_sines=0,
                                 noise_std=0.0, seed=3)
    # without sines and noise, y_t = w_t . x with x ~ N(0, I): the label correlation equals the cosine
    y = torch.cat([prob.train.targets[n] for n in ("t1", "t2", "t3")], 1).numpy()
    np.testing.assert_allclose(np.corrcoef(y.T), p, atol=0.05)
    assert prob.info["correlations"] == p
    assert [t.name for t in prob.tasks] == ["t1", "t2", "t3"]
    assert len(prob.train) == 3000 and prob.input_shape == (12,)


def test_correlated_regression_defaults_and_determinism():
    a = correlated_regression(num_train=50, num_val=5, num_test=5)
    b = correlated_regression(num_train=50, num_val=5, num_test=5)
    assert a.info["correlations"] == pairs_correlations(0.9, 0.7, 0.0)
    assert torch.equal(a.train.targets["t3"], b.train.targets["t3"])
    c = correlated_regression(num_train=50, num_val=5, num_test=5, seed=1)
    assert not torch.equal(a.train.targets["t3"], c.train.targets["t3"])


@pytest.mark.parametrize("bad, match", [
    ([[1, 0.5], [0.4, 1]], "symmetric"),
    ([[1, 0.5], [0.5, 2]], "diagonal"),
    ([[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]], "semi-definite"),
    ([[1]], "at least 2"),
    ("x", "square matrix"),
])
def test_correlated_regression_rejects_bad_matrices(bad, match):
    with pytest.raises(ConfigError, match=match):
        correlated_regression(bad, num_train=5, num_val=1, num_test=1)


def test_correlated_regression_rejects_bad_sizes():
    with pytest.raises(ConfigError, match="input_dim"):
        correlated_regression(input_dim=3)  # 4 tasks need d >= 4
    with pytest.raises(ConfigError, match="task_names"):
        correlated_regression(task_names=["a", "b"])


def test_glyph_sides_tasks_and_relations():
    prob = glyph_sides(num_classes=6, sizes=(40, 10, 10))
    assert [t.name for t in prob.tasks] == ["left_glyph", "left_strokes", "right_glyph", "right_strokes"]
    tr = prob.train.targets
    # the stroke task of a side is a function of that side's glyph
    for side in ("left", "right"):
        mapping: dict[int, int] = {}
        for g, s in zip(tr[f"{side}_glyph"].tolist(), tr[f"{side}_strokes"].tolist()):
            assert mapping.setdefault(g, s) == s
    assert prob.info["related_pairs"] == [["left_glyph", "left_strokes"], ["right_glyph", "right_strokes"]]


# --- TAG lookahead affinity -------------------------------------------------------------------------------------
def _tiny_problem(seed=0):
    return correlated_regression(pairs_correlations(0.9, 0.7, 0.0), num_train=512, num_val=10, num_test=10,
                                 input_dim=10, num_sines=0, seed=seed)


def test_lookahead_affinity_matches_its_definition_and_restores_the_model():
    prob = _tiny_problem()
    model = HardSharing(prob.tasks, "mlp", {"in_features": 10, "hidden": [8]})
    model.train()
    x, targets, masks = prob.train.batch(torch.arange(64))
    before = copy.deepcopy(model.state_dict())
    z = lookahead_affinity(model, prob.tasks, x, targets, masks, lr=0.05)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    # by hand: Z[i, j] = 1 - L_j(theta_s - lr * grad_s L_i) / L_j(theta_s), for i = t1, j = t3
    out = model(x)
    l1 = masked_task_loss(prob.tasks[0], out["t1"], targets["t1"])[0]
    l3 = float(masked_task_loss(prob.tasks[2], out["t3"], targets["t3"])[0].detach())
    grads = torch.autograd.grad(l1, model.shared_parameters())
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for p, g in zip(moved.shared_parameters(), grads):
            p.sub_(0.05 * g)
    l3_after = float(masked_task_loss(prob.tasks[2], moved(x)["t3"], targets["t3"])[0].detach())
    assert z.shape == (4, 4)
    assert z[0, 2].item() == pytest.approx(1 - l3_after / l3, rel=1e-5, abs=1e-7)
    # a small step along a task's own gradient lowers its own loss
    assert bool((z.diagonal() > 0).all())


def test_lookahead_affinity_identical_tasks_have_identical_columns():
    specs = [TaskSpec("a", 1, "regression"), TaskSpec("b", 1, "regression"), TaskSpec("c", 1, "regression")]
    model = HardSharing(specs, "mlp", {"in_features": 5, "hidden": [6]})
    model.heads["b"].load_state_dict(model.heads["a"].state_dict())
    x = torch.randn(32, 5)
    y = x.sum(1, keepdim=True)
    targets = {"a": y, "b": y.clone(), "c": torch.randn(32, 1)}
    z = lookahead_affinity(model, specs, x, targets, lr=0.01)
    # a and b are the same task: the same gradient and the same loss change
    assert torch.allclose(z[0], z[1], atol=1e-6)
    assert torch.allclose(z[:, 0], z[:, 1], atol=1e-6)
    assert z[0, 1].item() == pytest.approx(z[0, 0].item(), abs=1e-6)


def test_lookahead_affinity_marks_unlabelled_tasks_nan():
    prob = _tiny_problem()
    model = HardSharing(prob.tasks, "mlp", {"in_features": 10, "hidden": [8]})
    x, targets, _ = prob.train.batch(torch.arange(16))
    targets["t4"] = torch.full_like(targets["t4"], math.nan)
    z = lookahead_affinity(model, prob.tasks, x, targets)
    assert torch.isnan(z[3]).all() and torch.isnan(z[:, 3]).all()
    assert torch.isfinite(z[:3, :3]).all()


def test_lookahead_affinity_needs_shared_parameters():
    prob = _tiny_problem()
    model = SingleTask(prob.tasks, "mlp", {"in_features": 10, "hidden": [8]})
    x, targets, _ = prob.train.batch(torch.arange(8))
    with pytest.raises(ConfigError, match="shared"):
        lookahead_affinity(model, prob.tasks, x, targets)
    with pytest.raises(ConfigError, match="every"):
        AffinityTrainer(HardSharing(prob.tasks, "mlp", {"in_features": 10, "hidden": [8]}), prob.tasks, prob.train,
                        every=0)


def test_tag_ranks_the_correlated_pairs_highest_and_groups_them():
    prob = _tiny_problem(seed=0)
    aff, summary = tag_affinity(prob, "mlp", {"in_features": 10, "hidden": [16]},
                                MultiTaskConfig(epochs=2, lr=1e-2, batch_size=32, progress=False), every=2)
    assert summary["steps"] == 32 and aff.info["probes"] == 16 and len(aff.history) == 16
    top_two = {frozenset(p[:2]) for p in aff.ranked_pairs()[:2]}
    assert top_two == {frozenset(("t1", "t2")), frozenset(("t3", "t4"))}
    best = best_grouping(aff.matrix, aff.task_names, 2)
    assert {frozenset(g) for g in best.groups} == {frozenset(("t1", "t2")), frozenset(("t3", "t4"))}


def test_affinity_trainer_does_not_change_training():
    prob = _tiny_problem()
    cfg = MultiTaskConfig(epochs=1, lr=1e-2, batch_size=64, progress=False)
    torch.manual_seed(1)
    plain = HardSharing(prob.tasks, "mlp", {"in_features": 10, "hidden": [8]})
    probed = copy.deepcopy(plain)
    from mtl.multitask import MultiTaskTrainer

    MultiTaskTrainer(plain, prob.tasks, prob.train, config=cfg).fit()
    AffinityTrainer(probed, prob.tasks, prob.train, config=cfg, every=3).fit()
    for (k, a), b in zip(plain.state_dict().items(), probed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


# --- transfer matrix ------------------------------------------------------------------------------------------
def test_normalised_gain_is_relative_loss_reduction_per_target():
    transfer = [[0.5, 3.0], [1.0, 2.0]]
    scratch = [1.0, 4.0]
    gain = normalised_gain(transfer, scratch)
    assert gain == [[0.5, 0.25], [0.0, 0.5]]  # (scratch[t] - transfer[s][t]) / scratch[t]
    with pytest.raises(ConfigError, match="scratch loss"):
        normalised_gain(transfer, [1.0, 0.0])
    with pytest.raises(ConfigError, match="2 x 2"):
        normalised_gain([[1.0]], scratch)


def test_transfer_matrix_orders_related_sources_first():
    p = [[1, 0.95, 0], [0.95, 1, 0], [0, 0, 1]]
    prob = correlated_regression(p, num_train=600, num_val=60, num_test=100, input_dim=12, num_sines=0, seed=0)
    tm = transfer_matrix(prob, "mlp", {"in_features": 12, "hidden": [8]},
                         TransferConfig(source_epochs=4, target_samples=30, val_samples=30, target_epochs=40, lr=1e-2,
                                        batch_size=32, progress=False))
    g = tm.gain
    # the documented normalisation, from the raw test losses
    for s in range(3):
        for t in range(3):
            assert g[s][t] == pytest.approx((tm.scratch_loss[t] - tm.transfer_loss[s][t]) / tm.scratch_loss[t])
    # the correlated partner transfers better than the unrelated task, both ways
    assert g[1][0] > g[2][0] and g[0][1] > g[2][1]
    # and the unrelated task's own encoder serves it better than either of the others'
    assert g[2][2] > max(g[0][2], g[1][2])
    aff = tm.affinity()
    assert aff.matrix == g and aff.info["method"] == "transfer"


def test_transfer_config_validates():
    with pytest.raises(ConfigError, match="target_samples"):
        TransferConfig(target_samples=0)
    prob = correlated_regression(num_train=20, num_val=5, num_test=5)
    with pytest.raises(ConfigError, match="only 20"):
        transfer_matrix(prob, "mlp", {"in_features": 100, "hidden": [4]}, TransferConfig(target_samples=50))


# --- grouping -------------------------------------------------------------------------------------------------
def test_partitions_count_is_the_stirling_number():
    names = list("abcde")
    assert [sum(1 for _ in partitions(names, k)) for k in range(1, 6)] == [1, 15, 25, 10, 1]
    seen = {frozenset(frozenset(g) for g in p) for p in partitions(names, 2)}
    assert len(seen) == 15


def test_group_score_definition():
    names = ["a", "b", "c"]
    m = [[9.0, 1.0, 2.0],
         [3.0, 9.0, 4.0],
         [5.0, 6.0, 9.0]]
    # {a, b}: a receives m[b][a] = 3, b receives m[a][b] = 1; {c} alone: 0
    assert group_score(m, names, [["a", "b"], ["c"]]) == pytest.approx(4.0)
    # {a, b, c}: a gets mean(3, 5), b mean(1, 6), c mean(2, 4)
    assert group_score(m, names, [["a", "b", "c"]]) == pytest.approx(4.0 + 3.5 + 3.0)
    with pytest.raises(ConfigError, match="exactly once"):
        group_score(m, names, [["a", "b"]])


def test_best_grouping_recovers_planted_blocks():
    names = ["a", "b", "c", "d", "e", "f"]
    block = {"a": 0, "c": 0, "e": 1, "b": 1, "d": 2, "f": 2}
    m = [[1.0 if block[i] == block[j] else -0.5 for j in names] for i in names]
    best = best_grouping(m, names, 3)
    assert {frozenset(g) for g in best.groups} == {frozenset("ac"), frozenset("be"), frozenset("df")}
    ranked = rank_groupings(m, names, 3)
    assert ranked[0].score == best.score > ranked[1].score
    with pytest.raises(ConfigError, match="1..6"):
        best_grouping(m, names, 7)


def test_train_groups_reports_every_task():
    prob = correlated_regression(num_train=128, num_val=32, num_test=32, input_dim=8, num_sines=0)
    cfg = MultiTaskConfig(epochs=1, batch_size=64, progress=False)
    res = train_groups(prob, [["t1", "t2"], ["t3"], ["t4"]], "mlp", {"in_features": 8, "hidden": [4]}, cfg)
    assert sorted(res["metrics"]) == ["t1", "t2", "t3", "t4"]
    one = train_groups(prob, [["t1", "t2", "t3", "t4"]], "mlp", {"in_features": 8, "hidden": [4]}, cfg)
    assert res["parameters"] > one["parameters"]
    with pytest.raises(ConfigError, match="each task exactly once"):
        train_groups(prob, [["t1", "t2"]], "mlp", {"in_features": 8, "hidden": [4]}, cfg)


def test_task_affinity_helpers_and_plot(tmp_path):
    aff = TaskAffinity(["a", "b", "c"], [[1.0, 0.2, -0.1], [0.4, 1.0, math.nan], [0.0, 0.3, 1.0]])
    assert aff.value("b", "a") == 0.4
    assert aff.symmetric()[0][1] == pytest.approx(0.3)
    assert [p[:2] for p in aff.ranked_pairs()][0] == ("a", "b")
    d = aff.to_dict()
    assert d["matrix"][1][2] is None
    path = plot_affinity(tmp_path / "h.png", aff.matrix, aff.task_names, "t")
    assert path.stat().st_size > 1000
    with pytest.raises(ConfigError, match="3 x 3"):
        plot_affinity(tmp_path / "x.png", [[1.0]], aff.task_names)
