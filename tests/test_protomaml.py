"""Proto-MAML (Triantafillou et al. 2020): a head from the support prototypes, then MAML's inner loop."""

from __future__ import annotations

import pytest
import torch
from fewshot_helpers import make_tasks, tiny_conv
from torch import nn
from torch.func import functional_call

from meta import ANIL, MAML, ProtoMAML
from meta.maml import FOMAML
from mtl import create_backbone
from mtl.errors import ConfigError


def tiny_mlp(classes=3):
    return create_backbone("mlp", in_features=6, hidden=(5,), num_classes=classes).double()


def test_prototype_head_ranks_classes_as_squared_distances():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(7, 4, generator=g, dtype=torch.float64)
    sy = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    w, b = MAML._prototype_head(f, sy)
    protos = torch.stack([f[sy == k].mean(0) for k in range(3)])
    q = torch.randn(5, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close((q @ w.T + b).softmax(1), (-torch.cdist(q, protos) ** 2).softmax(1))
    with pytest.raises(ConfigError, match=r"must contain every class 0..2; missing \[1\]"):
        MAML._prototype_head(f[:3], torch.tensor([0, 2, 2]))


def _manual_protomaml(model, sx, sy, qx, qy, lr, steps, first_order):
    """Proto-MAML written out with autograd.grad on leaf tensors: the reference."""
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    trunk = {n[len("features."):]: v for n, v in params.items() if n.startswith("features.")}
    f = functional_call(model.features, trunk, (sx,))
    protos = torch.stack([f[sy == k].mean(0) for k in range(int(sy.max()) + 1)])
    # the head is a new variable initialised from the prototypes: inner gradients are partial
    # derivatives, so the trunk enters the inner loop as its own node (a clone), apart from the
    # path through the prototypes
    fast = {**{n: v.clone() for n, v in params.items()}, "head.weight": 2 * protos, "head.bias": -(protos ** 2).sum(1)}
    for _ in range(steps):
        loss = nn.functional.cross_entropy(functional_call(model, fast, (sx,)), sy)
        names = list(fast)
        grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=not first_order)
        fast = {n: fast[n] - lr * (g.detach() if first_order else g) for n, g in zip(names, grads)}
    outer = nn.functional.cross_entropy(functional_call(model, fast, (qx,)), qy)
    trunk_names = [n for n in params if not n.startswith("head.")]
    return dict(zip(trunk_names, torch.autograd.grad(outer, [params[n] for n in trunk_names])))


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("steps", [1, 2])
def test_meta_gradient_matches_the_written_out_algorithm(first_order, steps):
    torch.manual_seed(0)
    model = tiny_mlp()
    sx, sy, qx, qy = make_tasks((6,), tasks=1)
    algo = ProtoMAML(model, inner_lr=0.3, inner_steps=steps, first_order=first_order)
    loss, _ = algo.outer_loss(sx, sy, qx, qy)
    loss.backward()
    ref = _manual_protomaml(model, sx[0], sy[0], qx[0], qy[0], 0.3, steps, first_order)
    for name, g in ref.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, g, rtol=1e-9, atol=1e-12, msg=name)
    assert model.head.weight.grad is None and model.head.bias.grad is None  # the model's own head is unused


def test_trained_at_three_ways_tested_at_any_number_of_classes():
    torch.manual_seed(0)
    algo = ProtoMAML(tiny_conv(classes=3), inner_lr=0.1).eval()
    for ways in (2, 5, 7):
        sx, sy, qx, qy = make_tasks((1, 16, 16), tasks=1, n_support=ways, n_query=2 * ways, classes=ways)
        metrics = algo.evaluate_task(sx[0], sy[0], qx[0], qy[0])
        assert 0.0 <= metrics["accuracy"] <= 1.0
        with torch.no_grad():
            assert algo.adapt(sx[0], sy[0])(qx[0]).shape == (2 * ways, ways)


def test_anil_with_a_prototype_head_gives_the_full_path_gradients():
    """The head-only fast path (trunk features once per task) and the general path agree."""
    tasks = make_tasks((1, 16, 16), tasks=2)
    grads = []
    for fast in (True, False):
        torch.manual_seed(0)
        algo = ANIL(tiny_conv(), inner_lr=0.2, inner_steps=2, head_init="prototypes")
        algo._head_only = fast
        algo.outer_backward(*tasks)
        grads.append({n: p.grad for n, p in algo.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-9, atol=1e-12, msg=name)


def test_protomaml_before_adaptation_is_a_prototypical_network():
    """With a vanishing inner step, predictions are the prototype classifier's (Snell et al. 2017)."""
    torch.manual_seed(0)
    model = tiny_mlp()
    sx, sy, qx, _ = make_tasks((6,), tasks=1)
    algo = ProtoMAML(model, inner_lr=1e-12)
    with torch.no_grad():
        probs = algo.adapt(sx[0], sy[0])(qx[0]).softmax(1)
        f_s, f_q = model.features(sx[0]), model.features(qx[0])
    protos = torch.stack([f_s[sy[0] == k].mean(0) for k in range(3)])
    torch.testing.assert_close(probs, (-torch.cdist(f_q, protos) ** 2).softmax(1))


@pytest.mark.parametrize("build, message", [
    (lambda: MAML(tiny_conv(), head_init="mean"), "head_init must be None or 'prototypes'"),
    (lambda: ProtoMAML(tiny_conv(), learn_inner_lr="per_param"), "learn_inner_lr='per_param'"),
    (lambda: FOMAML(tiny_conv(), head_init="prototypes", batched=True), "needs batched=False"),
    (lambda: ProtoMAML(nn.Sequential(nn.Flatten(), nn.Linear(4, 3))), "registry backbone"),
])
def test_bad_options_are_refused(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_cli_trains_protomaml_and_tests_it_at_other_ways(tmp_path, capsys):
    import json

    from mtl.cli import main

    tiny = ["--glyph-classes", "12,6,8", "--backbone-kwargs", '{"hidden": 8}', "--queries", "3",
            "--validation-tasks", "4", "--test-tasks", "6", "--no-progress", "--threads", "1"]
    out = tmp_path / "run"
    assert main(["fewshot", "train", "--algo", "protomaml", "--ways", "5", "--train-ways", "3", "--meta-batch", "2",
                 "--budget-iterations", "2", "--out", str(out), *tiny]) == 0
    js = tmp_path / "e.json"
    assert main(["fewshot", "evaluate", "--checkpoint", str(out / "best.pt"), "--ways", "8", "--test-tasks", "6",
                 "--no-progress", "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    assert res["algorithm"] == "protomaml" and res["ways"] == 8 and 0.0 <= res["accuracy"] <= 1.0
    assert "protomaml 8-way 1-shot" in capsys.readouterr().out
