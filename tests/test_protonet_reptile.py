"""ProtoNets (meta.protonet) and Reptile (meta.reptile): definitions, gradients, API, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fewshot_helpers import gaussian_tasks, make_tasks, mean_accuracy, tiny_conv

from meta.functional import AdaptedPredictor
from meta.protonet import ProtoNet, prototype_logits, prototypes
from meta.reptile import Reptile
from mtl import create_backbone
from mtl.errors import ConfigError


def tiny_mlp(dtype=torch.float64, classes=3):
    return create_backbone("mlp", in_features=4, hidden=(6,), num_classes=classes,
                           activation="tanh").to(dtype)


def embedder(dtype=torch.float64):
    return create_backbone("mlp", in_features=4, hidden=(6, 5), num_classes=None).to(dtype)


# --------------------------------------------------------------------------- ProtoNet


def test_prototypes_are_class_means_and_logits_negative_squared_distances():
    emb = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, 3.0], [5.0, 5.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2])
    protos = prototypes(emb, labels)
    assert torch.equal(protos, torch.tensor([[1.0, 0.0], [1.0, 2.0], [5.0, 5.0]], dtype=torch.float64))
    q = torch.tensor([[1.0, 1.0], [0.0, 5.0]], dtype=torch.float64)
    logits = prototype_logits(q, protos)
    assert torch.equal(logits, -torch.tensor([[1.0, 1.0, 32.0], [26.0, 10.0, 25.0]], dtype=torch.float64))
    cos = prototype_logits(q, protos, "cosine", cosine_scale=2.0)
    assert torch.allclose(cos, 2.0 * F.cosine_similarity(q[:, None], protos[None], dim=-1))


def test_protonet_adapt_predictor_and_outer_loss():
    model = embedder()
    sx, sy, qx, qy = make_tasks((4,), tasks=2, n_support=6, n_query=9, classes=3)
    algo = ProtoNet(model)
    predictor = algo.adapt(sx[0], sy[0])
    assert isinstance(predictor, AdaptedPredictor)
    with torch.no_grad():
        emb_s, emb_q = model(sx[0]), model(qx[0])
    means = torch.stack([emb_s[sy[0] == c].mean(0) for c in range(3)])
    assert torch.allclose(predictor.prototypes, means)
    assert torch.allclose(predictor(qx[0]), -torch.cdist(emb_q, means) ** 2)
    assert set(predictor.params) == {n for n, _ in model.named_parameters()}
    loss, metrics = algo.outer_loss(sx, sy, qx, qy)
    expected = sum(F.cross_entropy(algo.adapt(sx[b], sy[b])(qx[b]), qy[b]) for b in range(2)) / 2
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-12)
    assert set(metrics) == {"loss", "accuracy"}
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    ev = algo.evaluate_task(sx[0], sy[0], qx[0], qy[0])
    assert ev["loss"] == pytest.approx(float(F.cross_entropy(predictor(qx[0]), qy[0]).detach()), abs=1e-12)


def test_protonet_gradients_flow_through_predictor_and_cosine():
    model = embedder()
    sx, sy, qx, qy = make_tasks((4,), tasks=1)
    for distance in ("euclidean", "cosine"):
        model.zero_grad()
        predictor = ProtoNet(model, distance=distance).adapt(sx[0], sy[0])
        F.cross_entropy(predictor(qx[0]), qy[0]).backward()
        assert all(float(p.grad.abs().sum()) > 0 for p in model.parameters())


def test_protonet_conv_backbone_and_eval_mode_running_stats():
    model = create_backbone("conv4", in_channels=1, image_size=16, hidden=4).double()
    algo = ProtoNet(model)
    sx, sy, qx, qy = make_tasks((1, 16, 16), tasks=2)
    loss, _ = algo.outer_loss(sx, sy, qx, qy)
    loss.backward()
    stats = model.features.block1.norm.running_mean.clone()
    algo.eval()
    algo.evaluate_task(sx[0], sy[0], qx[0], qy[0])
    assert torch.equal(model.features.block1.norm.running_mean, stats)


def test_protonet_errors():
    with pytest.raises(ConfigError, match="distance must be one of \\['euclidean', 'cosine'\\], got 'l1'"):
        ProtoNet(embedder(), distance="l1")
    with pytest.raises(ConfigError, match="headless backbone"):
        ProtoNet(tiny_mlp())
    with pytest.raises(ConfigError, match="cosine_scale must be a finite number > 0, got 0"):
        ProtoNet(embedder(), distance="cosine", cosine_scale=0)
    algo = ProtoNet(embedder())
    x = torch.randn(4, 4, dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"support_y must contain every class 0..2; missing \[1\]"):
        algo.adapt(x, torch.tensor([0, 0, 2, 2]))
    sx, sy, qx, qy = make_tasks((4,), tasks=2)
    with pytest.raises(ConfigError, match="support and query task counts differ"):
        algo.outer_loss(sx, sy, qx[:1], qy[:1])
    with pytest.raises(ConfigError, match=r"query_y labels must be in 0..2"):
        algo.outer_loss(sx, sy, qx, qy + 3)


def test_protonet_learns_gaussian_few_shot():
    torch.manual_seed(0)
    algo = ProtoNet(create_backbone("mlp", in_features=10, hidden=(32,), num_classes=None))
    test = gaussian_tasks(torch.Generator().manual_seed(123), 50)
    before = mean_accuracy(algo, test)
    opt = torch.optim.Adam(algo.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(100):
        loss, _ = algo.outer_loss(*gaussian_tasks(gen, 8))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mean_accuracy(algo, test)
    assert after > 0.8 and after > before + 0.3, (before, after)  # chance is 0.2


# --------------------------------------------------------------------------- Reptile


def manual_sgd(model, x, y, lr, steps):
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    for _ in range(steps):
        loss = F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()))
        params = {n: (p - lr * g).detach().requires_grad_(True) for (n, p), g in zip(params.items(), grads)}
    return {n: p.detach() for n, p in params.items()}


@pytest.mark.parametrize("train_on_query", [False, True])
def test_reptile_surrogate_gradient_is_theta_minus_phi(train_on_query):
    model = tiny_mlp()
    sx, sy, qx, qy = make_tasks((4,), tasks=3)
    algo = Reptile(model, inner_lr=0.2, inner_steps=3, train_on_query=train_on_query)
    loss, metrics = algo.outer_loss(sx, sy, qx, qy)
    loss.backward()
    phis = []
    for b in range(3):
        x = torch.cat([sx[b], qx[b]]) if train_on_query else sx[b]
        y = torch.cat([sy[b], qy[b]]) if train_on_query else sy[b]
        phis.append(manual_sgd(model, x, y, 0.2, 3))
    expected_loss = 0.0
    for n, p in model.named_parameters():
        mean_phi = sum(phi[n] for phi in phis) / 3
        assert torch.allclose(p.grad, p.detach() - mean_phi, atol=1e-12)
        expected_loss += sum(0.5 * float((p.detach() - phi[n]).pow(2).sum()) for phi in phis) / 3
    assert float(loss.detach()) == pytest.approx(expected_loss, abs=1e-12)
    assert metrics["surrogate"] == pytest.approx(expected_loss, abs=1e-12)
    query = sum(float(F.cross_entropy(torch.func.functional_call(model, phis[b], (qx[b],)), qy[b]))
                for b in range(3)) / 3
    assert metrics["loss"] == pytest.approx(query, abs=1e-12)
    # an outer SGD step of size eps is the Reptile update theta + eps * (mean phi - theta)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.optim.SGD(algo.parameters(), lr=1.0).step()
    for n, p in model.named_parameters():
        assert torch.allclose(p, sum(phi[n] for phi in phis) / 3, atol=1e-12)
        assert not torch.equal(p, before[n])


def test_reptile_adapt_evaluate_and_batched():
    model = tiny_conv()
    sx, sy, qx, qy = make_tasks((1, 16, 16), tasks=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    algo = Reptile(model, inner_lr=0.2, inner_steps=2, eval_inner_steps=4)
    predictor = algo.adapt(sx[0], sy[0])
    ref = manual_sgd(model, sx[0], sy[0], 0.2, 2)
    for n in ref:
        assert torch.allclose(predictor.params[n], ref[n], atol=1e-12)
    ref4 = manual_sgd(model, sx[0], sy[0], 0.2, 4)
    metrics = algo.evaluate_task(sx[0], sy[0], qx[0], qy[0])
    out = torch.func.functional_call(model, ref4, (qx[0],))
    assert metrics["loss"] == pytest.approx(float(F.cross_entropy(out, qy[0])), abs=1e-10)
    assert predictor(qx[0]).shape == (9, 3)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    la, ma = algo.outer_loss(sx, sy, qx, qy)
    lb, mb = Reptile(model, inner_lr=0.2, inner_steps=2, batched=True).outer_loss(sx, sy, qx, qy)
    ga = torch.autograd.grad(la, list(model.parameters()))
    gb = torch.autograd.grad(lb, list(model.parameters()))
    assert max(float((a - b).abs().max()) for a, b in zip(ga, gb)) < 1e-10
    assert ma == pytest.approx(mb)


def test_reptile_errors():
    with pytest.raises(ConfigError, match="inner_lr must be a finite number > 0, got 0"):
        Reptile(tiny_mlp(), inner_lr=0)
    with pytest.raises(ConfigError, match="inner_steps must be an integer >= 1, got 0"):
        Reptile(tiny_mlp(), inner_steps=0)
    with pytest.raises(ConfigError, match="loss must be one of"):
        Reptile(tiny_mlp(), loss="l1")
    with pytest.raises(ConfigError, match="Reptile needs a backbone with a head"):
        Reptile(embedder())
    algo = Reptile(tiny_mlp())
    sx, sy, qx, qy = make_tasks((4,), tasks=2)
    with pytest.raises(ConfigError, match="support_x and support_y task and example counts differ"):
        algo.outer_loss(sx, sy[:1], qx, qy)


def test_reptile_learns_gaussian_few_shot():
    torch.manual_seed(0)
    algo = Reptile(create_backbone("mlp", in_features=10, hidden=(32,), num_classes=5),
                   inner_lr=0.1, inner_steps=5, train_on_query=True)
    test = gaussian_tasks(torch.Generator().manual_seed(123), 30)
    before = mean_accuracy(algo, test)
    opt = torch.optim.SGD(algo.parameters(), lr=1.0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(40):
        loss, _ = algo.outer_loss(*gaussian_tasks(gen, 8))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mean_accuracy(algo, test)
    assert after > before + 0.07, (before, after)  # a smoke test: 40 iterations, ~0.32 -> ~0.43
