"""Hard sharing, independent and soft-tied columns, cross-stitch units and MMoE on registry backbones."""

import copy

import pytest
import torch

from mtl.errors import ConfigError
from mtl.multitask import ARCHITECTURES, CrossStitch, MMoE, SingleTask, SoftSharing, TaskSpec, build_model

TASKS = [TaskSpec("a", 3), TaskSpec("b", 1, "regression")]
MLP = {"in_features": 6, "hidden": (8, 8)}
CONV = {"in_channels": 1, "image_size": 8, "hidden": 4, "num_blocks": 2}


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("backbone, kwargs, shape", [("mlp", MLP, (6,)), ("conv4", CONV, (1, 8, 8))])
def test_every_architecture_on_every_backbone(arch, backbone, kwargs, shape):
    torch.manual_seed(0)
    model = build_model(arch, TASKS, backbone, kwargs, head_hidden=5 if arch == "mmoe" else None)
    out = model(torch.randn(4, *shape))
    assert set(out) == {"a", "b"} and out["a"].shape == (4, 3) and out["b"].shape == (4, 1)
    assert model.task_outputs == {"a": 3, "b": 1}
    sum(o.sum() for o in out.values()).backward()
    shared = {id(p) for p in model.shared_parameters()}
    assert shared <= {id(p) for p in model.parameters()}
    if arch in ("single", "soft"):
        assert not shared  # the columns share nothing (soft ones only through the penalty)
    else:
        assert shared and {id(p) for p in model.last_shared_parameters()} <= shared
    heads = {id(p) for p in model.heads.parameters()}
    assert not heads & shared


def test_hard_sharing_shares_exactly_the_trunk():
    model = build_model("hard", TASKS, "mlp", MLP)
    assert [id(p) for p in model.shared_parameters()] == [id(p) for p in model.trunk.parameters()]
    assert [id(p) for p in model.last_shared_parameters()] == [id(model.trunk.features.fc2.weight),
                                                              id(model.trunk.features.fc2.bias)]


def _two_regression_tasks(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, {"a": x[:, :1] * 2 - x[:, 1:2], "b": -x[:, 2:3] + 0.5}


def _train_columns(model, x, ys, steps, lr, tasks=("a", "b")):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        out = model(x)
        loss = sum(torch.nn.functional.mse_loss(out[t], ys[t]) for t in tasks)
        reg = model.regularization()
        if reg is not None:
            loss = loss + reg
        opt.zero_grad()
        loss.backward()
        opt.step()


REG = [TaskSpec("a", 1, "regression"), TaskSpec("b", 1, "regression")]


def test_soft_sharing_very_large_lambda_drives_columns_together():
    torch.manual_seed(0)
    model = SoftSharing(REG, "mlp", MLP, strength=1e3)
    x, ys = _two_regression_tasks()
    start = model.column_distance()
    assert start > 1.0
    _train_columns(model, x, ys, steps=60, lr=1e-4)
    assert model.column_distance() < 1e-3 * start
    cols = model.columns
    assert torch.allclose(cols["a"].features.fc1.weight, cols["b"].features.fc1.weight, atol=1e-4)


def test_soft_sharing_lambda_zero_leaves_columns_independent():
    torch.manual_seed(0)
    model = SoftSharing(REG, "mlp", MLP, strength=0.0)
    assert model.regularization() is None
    alone = copy.deepcopy(model)
    x, ys = _two_regression_tasks()
    start = model.column_distance()
    # task b's loss does not reach column a
    out = model(x)
    torch.nn.functional.mse_loss(out["b"], ys["b"]).backward()
    assert all(p.grad is None for p in model.columns["a"].parameters())
    model.zero_grad(set_to_none=True)
    _train_columns(model, x, ys, steps=60, lr=0.05)
    _train_columns(alone, x, ys, steps=60, lr=0.05, tasks=("a",))  # column a trained on task a alone
    for p, q in zip(model.columns["a"].parameters(), alone.columns["a"].parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert model.column_distance() > 0.9 * start


@pytest.mark.parametrize("tie", ["pairwise", "mean"])
def test_soft_penalty_matches_its_definition(tie):
    torch.manual_seed(0)
    tasks = REG + [TaskSpec("c", 2, "regression")]
    model = SoftSharing(tasks, "mlp", MLP, strength=0.5, tie=tie, tied_layers=r"fc1\.weight$")
    assert model.tied_names == ["features.fc1.weight"]
    ws = [model.columns[t.name].features.fc1.weight for t in tasks]
    if tie == "pairwise":
        want = sum((ws[i] - ws[j]).pow(2).sum() for i in range(3) for j in range(i + 1, 3))
    else:
        mean = sum(ws) / 3
        want = sum((w - mean).pow(2).sum() for w in ws)
    assert torch.allclose(model.regularization(), 0.5 * want)


@pytest.mark.parametrize("kwargs, message", [
    ({"strength": -1.0}, r"lambda must be a finite number >= 0, got -1.0"),
    ({"strength": float("nan")}, "lambda"),
    ({"tie": "l1"}, "tie must be one of"),
    ({"tied_layers": "conv"}, "match no parameter"),
    ({"tied_layers": "("}, "not a valid regular expression"),
])
def test_soft_sharing_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SoftSharing(REG, "mlp", MLP, **kwargs)


def test_cross_stitch_identity_units_equal_independent_columns():
    torch.manual_seed(0)
    stitched = CrossStitch(TASKS, "conv4", CONV, init_self=1.0)
    single = SingleTask(TASKS, "conv4", CONV)
    single.load_state_dict({k: v for k, v in stitched.state_dict().items() if not k.startswith("stitches")})
    stitched.eval()
    single.eval()
    x = torch.randn(3, 1, 8, 8)
    for name, out in stitched(x).items():
        assert torch.allclose(out, single(x)[name], atol=1e-6)
    assert len(stitched.stitches) == 2  # one unit after each conv block


def test_cross_stitch_mixes_columns():
    torch.manual_seed(0)
    model = CrossStitch(REG, "mlp", MLP)
    assert torch.allclose(model.stitches[0], torch.tensor([[0.9, 0.1], [0.1, 0.9]]))
    x, ys = _two_regression_tasks(8)
    torch.nn.functional.mse_loss(model(x)["b"], ys["b"]).backward()
    # task b's loss reaches column a through the units, and the units themselves learn
    assert model.columns["a"].features.fc1.weight.grad.abs().sum() > 0
    assert model.stitches[0].grad.abs().sum() > 0


def test_mmoe_is_a_gated_mixture_of_shared_experts():
    torch.manual_seed(0)
    model = MMoE(TASKS, "mlp", MLP, num_experts=3)
    x = torch.randn(5, 6)
    gates = model.gate_weights(x)
    for g in gates.values():
        assert g.shape == (5, 3) and torch.allclose(g.sum(1), torch.ones(5))
    feats = torch.stack([e(x) for e in model.experts], 1)
    want = model.heads["a"]((gates["a"][:, :, None] * feats).sum(1))
    assert torch.allclose(model(x)["a"], want)
    assert not torch.allclose(gates["a"], gates["b"])  # each task has its own gate


def test_build_model_bad_input():
    with pytest.raises(ConfigError, match="unknown architecture 'deep'; choose one of single, hard"):
        build_model("deep", TASKS, "mlp", MLP)
    with pytest.raises(ConfigError, match=r"does not take \['num_experts'\]"):
        build_model("hard", TASKS, "mlp", MLP, num_experts=3)
    with pytest.raises(ConfigError, match="may not set num_classes"):
        build_model("hard", TASKS, "mlp", {**MLP, "num_classes": 4})
    with pytest.raises(ConfigError, match="unique"):
        build_model("hard", [TaskSpec("a", 2), TaskSpec("a", 3)], "mlp", MLP)
    with pytest.raises(ConfigError, match="num_experts"):
        build_model("mmoe", TASKS, "mlp", MLP, num_experts=0)
