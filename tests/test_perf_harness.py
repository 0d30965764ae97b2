"""Speed paths of meta.functional / meta.maml (forward plans, task-by-task backward) and the perf harness."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fewshot_helpers import make_tasks, tiny_conv
from torch import nn
from torch.func import functional_call

from meta.functional import ForwardPlan, forward_plan, functional_forward
from meta.maml import ANIL, FOMAML, MAML
from meta.protonet import ProtoNet
from mtl import create_backbone
from mtl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def blocky_images(n, size=16, seed=0):
    """Images with constant patches: many exact ties inside 2x2 max-pool windows."""
    g = torch.Generator().manual_seed(seed)
    coarse = (torch.rand(n, 1, size // 4, size // 4, generator=g) > 0.5).double()
    return F.interpolate(coarse, scale_factor=4.0)


def grads_of(fn, params):
    return torch.autograd.grad(fn(), list(params.values()), create_graph=True)


@pytest.mark.parametrize("channels_last", [True, False])
def test_forward_plan_matches_functional_call_to_second_order(channels_last):
    model = tiny_conv()
    plan = ForwardPlan(model, channels_last=channels_last)
    assert [k for k, _, _ in plan.ops[:4]] == ["Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU"]  # swapped
    x = blocky_images(6)
    y = torch.arange(6) % 3
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    out_ref = functional_call(model, params, (x,))
    out = plan(params, x)
    assert torch.allclose(out, out_ref, atol=1e-12)
    assert torch.allclose(plan(params, x, channels_last=not channels_last), out_ref, atol=1e-12)
    g_ref = grads_of(lambda: F.cross_entropy(functional_call(model, params, (x,)), y), params)
    g = grads_of(lambda: F.cross_entropy(plan(params, x), y), params)
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, atol=1e-10)
    # second order: gradient of a function of the first gradients
    h_ref = torch.autograd.grad(sum(t.pow(2).sum() for t in g_ref), list(params.values()))
    h = torch.autograd.grad(sum(t.pow(2).sum() for t in g), list(params.values()))
    for a, b in zip(h, h_ref):
        assert torch.allclose(a, b, atol=1e-9)
    assert max(float(t.abs().max()) for t in h) > 1e-6  # not a vacuous comparison



def test_forward_plan_input_gradients_match_functional_call():
    """The first convolution's patch matrix is rebuilt in backward; gradients to the images too."""
    model = tiny_conv()
    plan = ForwardPlan(model)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    y = torch.arange(6) % 3
    grads = []
    for forward in (plan, lambda p, x: functional_call(model, p, (x,))):
        x = blocky_images(6).requires_grad_(True)
        g_x, = torch.autograd.grad(F.cross_entropy(forward(params, x), y), [x], create_graph=True)
        g_w, = torch.autograd.grad(g_x.pow(2).sum(), [params["features.block1.conv.weight"]])
        grads.append((g_x, g_w))
    (gx, gw), (gx_ref, gw_ref) = grads
    assert torch.allclose(gx, gx_ref, atol=1e-12) and torch.allclose(gw, gw_ref, atol=1e-10)
    assert gx.abs().max() > 1e-6 and gw.abs().max() > 1e-8

def test_forward_plan_falls_back_for_unknown_layers_and_hooks():
    assert forward_plan(tiny_conv()) is not None
    assert forward_plan(create_backbone("mlp", in_features=4, hidden=(5,), num_classes=2)) is not None
    odd = nn.Sequential(nn.Linear(4, 3), nn.Softplus())
    assert forward_plan(odd) is None
    hooked = tiny_conv()
    hooked.features.block1.conv.register_forward_hook(lambda m, i, o: o * 2)
    assert forward_plan(hooked) is None
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    params = dict(hooked.named_parameters())
    # the hook is honoured: functional_forward falls back to functional_call
    assert torch.allclose(functional_forward(hooked, params, {}, x), hooked(x))


def test_forward_plan_leaves_running_stats_alone():
    model = create_backbone("conv4", in_channels=1, image_size=16, hidden=4, num_classes=3).double()
    before = model.features.block1.norm.running_mean.clone()
    x = torch.randn(5, 1, 16, 16, dtype=torch.float64)
    out = functional_forward(model, dict(model.named_parameters()), dict(model.named_buffers()), x)
    assert torch.equal(model.features.block1.norm.running_mean, before)
    model.train()
    assert torch.allclose(out, functional_call(model, dict(model.named_parameters()), (x,)), atol=1e-12)


@pytest.mark.parametrize("cls", [MAML, FOMAML, ANIL])
def test_outer_backward_equals_outer_loss_backward(cls):
    model = tiny_conv()
    tasks = make_tasks((1, 16, 16), tasks=3)
    algo = cls(model, inner_lr=0.3, inner_steps=2)
    loss, metrics = algo.outer_loss(*tasks)
    ref = torch.autograd.grad(loss, list(algo.parameters()))
    algo.zero_grad()
    metrics2 = algo.outer_backward(*tasks)
    for r, p in zip(ref, algo.parameters()):
        assert torch.allclose(p.grad, r, atol=1e-12)
    assert metrics2 == pytest.approx(metrics)
    assert float(ref[0].abs().sum()) > 0


def test_protonet_outer_backward_equals_outer_loss_backward():
    model = create_backbone("conv4", in_channels=1, image_size=16, hidden=4, track_running_stats=False).double()
    tasks = make_tasks((1, 16, 16), tasks=2)
    algo = ProtoNet(model)
    loss, metrics = algo.outer_loss(*tasks)
    ref = torch.autograd.grad(loss, list(algo.parameters()))
    metrics2 = algo.outer_backward(*tasks)
    for r, p in zip(ref, algo.parameters()):
        assert torch.allclose(p.grad, r, atol=1e-12)
    assert metrics2 == pytest.approx(metrics)


def _load_harness():
    spec = importlib.util.spec_from_file_location("perf_meta", ROOT / "benchmarks" / "perf_meta.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["perf_meta"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_harness_smoke_without_peers(capsys, tmp_path):
    mod = _load_harness()
    threads = torch.get_num_threads()
    try:
        rc = mod.main(["--smoke", "--no-peers", "--no-memory", "--algos", "maml,anil",
                       "--json", str(tmp_path / "p.json")])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert rc == 0
    assert "peers absent: --no-peers" in out
    rows = [line for line in out.splitlines() if line.startswith("| maml |") or line.startswith("| anil |")]
    assert [r.split("|")[2].strip() for r in rows] == ["toolkit", "floor-nn", "floor"] * 2
    assert (tmp_path / "p.json").exists()


def test_harness_smoke_with_task_workers(capsys):
    mod = _load_harness()
    threads = torch.get_num_threads()
    try:
        rc = mod.main(["--smoke", "--no-peers", "--no-memory", "--algos", "fomaml", "--threads", "2",
                       "--workers", "2"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| fomaml |")]
    assert rows == ["toolkit", "toolkit-workers2", "floor-nn", "floor", "toolkit-workers2 vs toolkit"]
    speedup = [line for line in out.splitlines() if "toolkit-workers2 vs toolkit" in line][0].split("|")[5]
    assert float(speedup.strip().rstrip("x")) > 0


@pytest.mark.parametrize("momentum", [0.1, None])
def test_forward_plan_module_mode_equals_calling_the_module(momentum):
    """running_stats="module": outputs, gradients and running statistics as ``model(x)`` gives,
    in train mode (statistics updated) and in eval mode (statistics used)."""
    torch.manual_seed(0)
    ref = create_backbone("conv4", in_channels=1, image_size=16, hidden=4).double()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum
    mine = copy.deepcopy(ref)
    plan = ForwardPlan(mine)
    for step in range(3):
        x = torch.randn(6, 1, 16, 16, dtype=torch.float64)
        for model in (ref, mine):
            model.train(step < 2)
        out_ref = ref(x)
        out = plan(dict(mine.named_parameters()), x, running_stats="module")
        assert torch.allclose(out, out_ref, atol=1e-10)
        g_ref = torch.autograd.grad(out_ref.square().sum(), list(ref.parameters()))
        g = torch.autograd.grad(out.square().sum(), list(mine.parameters()))
        for a, b in zip(g, g_ref):
            assert torch.allclose(a, b, atol=1e-9)
        for (name, a), b in zip(mine.named_buffers(), ref.buffers()):
            assert torch.allclose(a.double(), b.double(), atol=1e-12), name
    assert int(mine.features.block1.norm.num_batches_tracked) == 2
    with pytest.raises(ConfigError, match="running_stats must be one of"):
        plan(dict(mine.named_parameters()), x, running_stats="train")


def test_protonet_through_the_plan_equals_calling_the_module(monkeypatch):
    """ProtoNet embeds through the forward plan: same loss, gradients and running statistics as
    calling the module (train mode), and the same evaluation (eval mode: running statistics)."""
    import meta.protonet as protonet_module

    torch.manual_seed(0)
    base = create_backbone("conv4", in_channels=1, image_size=16, hidden=4).double()
    tasks = [t.double() if t.is_floating_point() else t for t in make_tasks((1, 16, 16), tasks=2)]
    results = []
    for use_plan in (True, False):
        if not use_plan:
            monkeypatch.setattr(protonet_module, "forward_plan", lambda model: None)
        algo = ProtoNet(copy.deepcopy(base)).train()
        metrics = algo.outer_backward(*tasks)
        grads = [p.grad.clone() for p in algo.parameters()]
        buffers = [b.clone() for b in algo.buffers()]
        algo.eval()
        evaluation = algo.evaluate_task(tasks[0][0], tasks[1][0], tasks[2][0], tasks[3][0])
        results.append((metrics, grads, buffers, evaluation))
    (m1, g1, b1, e1), (m2, g2, b2, e2) = results
    assert m1 == pytest.approx(m2, abs=1e-10) and e1 == pytest.approx(e2, abs=1e-10)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(g1, g2))
    assert all(torch.allclose(a.double(), b.double(), atol=1e-12) for a, b in zip(b1, b2))
    assert not torch.equal(b1[0], base.features.block1.norm.running_mean)  # statistics did move
