"""MAML family (meta.maml): exact meta-gradients, variants, API contract and errors."""

from __future__ import annotations

import math

import higher
import pytest
import torch
import torch.nn.functional as F
from fewshot_helpers import gaussian_tasks, make_tasks, mean_accuracy, tiny_conv

from meta.functional import AdaptedPredictor, inner_loop
from meta.maml import ANIL, FOMAML, MAML, MAMLPlusPlus, MetaSGD, msl_weights
from mtl import create_backbone
from mtl.errors import ConfigError


def tiny_mlp(dtype=torch.float64, classes=3, activation="tanh"):
    return create_backbone("mlp", in_features=4, hidden=(6,), num_classes=classes,
                           activation=activation).to(dtype)


def meta_grads(algo, tasks, **kw):
    loss, metrics = algo.outer_loss(*tasks, **kw)
    params = list(algo.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)], metrics


def higher_grads(model, tasks, lr, steps):
    sx, sy, qx, qy = tasks
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    total = 0.0
    for b in range(sx.shape[0]):
        with higher.innerloop_ctx(model, opt, copy_initial_weights=False,
                                  track_higher_grads=True) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(fmodel(sx[b]), sy[b]))
            total = total + F.cross_entropy(fmodel(qx[b]), qy[b])
    total = total / sx.shape[0]
    return total.detach(), torch.autograd.grad(total, list(model.parameters()))


def max_diff(a, b):
    return max(float((x - y).detach().abs().max()) for x, y in zip(a, b))


# --------------------------------------------------------------------------- exact meta-gradients


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("arch", ["mlp", "conv4"])
def test_second_order_matches_higher(arch, steps):
    model = tiny_mlp() if arch == "mlp" else tiny_conv()
    tasks = make_tasks((4,) if arch == "mlp" else (1, 16, 16))
    algo = MAML(model, inner_lr=0.3, inner_steps=steps)
    loss, grads, _ = meta_grads(algo, tasks)
    ref_loss, ref = higher_grads(model, tasks, 0.3, steps)
    assert float(loss) == pytest.approx(float(ref_loss), abs=1e-10)
    assert max_diff(grads, ref) < 1e-6
    # the check has teeth: second-order terms are not negligible here
    _, fo, _ = meta_grads(FOMAML(model, inner_lr=0.3, inner_steps=steps), tasks)
    assert max_diff(fo, ref) > 1e-4


def test_second_order_matches_finite_differences():
    model = tiny_mlp()
    tasks = make_tasks((4,), tasks=2)
    algo = MAML(model, inner_lr=0.5, inner_steps=2)
    _, grads, _ = meta_grads(algo, tasks)
    eps = 1e-6
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            flat, gflat = p.view(-1), g.reshape(-1)
            for i in range(flat.numel()):
                old = float(flat[i])
                flat[i] = old + eps
                plus = float(algo.outer_loss(*tasks)[0])
                flat[i] = old - eps
                minus = float(algo.outer_loss(*tasks)[0])
                flat[i] = old
                assert (plus - minus) / (2 * eps) == pytest.approx(float(gflat[i]), abs=1e-6)


def test_first_order_gradient_is_query_gradient_at_adapted_params():
    model = tiny_mlp()
    sx, sy, qx, qy = make_tasks((4,), tasks=1)
    algo = FOMAML(model, inner_lr=0.3, inner_steps=2)
    _, grads, _ = meta_grads(algo, (sx, sy, qx, qy))
    with torch.no_grad():
        phi = algo.adapt(sx[0], sy[0], steps=2).params
    leaves = {k: v.clone().requires_grad_(True) for k, v in phi.items()}
    loss = F.cross_entropy(torch.func.functional_call(model, leaves, (qx[0],)), qy[0])
    ref = torch.autograd.grad(loss, [leaves[n] for n, _ in model.named_parameters()])
    assert max_diff(grads, ref) < 1e-10
    _, so, _ = meta_grads(MAML(model, inner_lr=0.3, inner_steps=2), (sx, sy, qx, qy))
    assert max_diff(so, ref) > 1e-4


def test_first_order_until_switches_derivative_order():
    model = tiny_mlp()
    tasks = make_tasks((4,))
    annealed = MAML(model, inner_lr=0.3, inner_steps=2, first_order_until=10)
    _, fo_ref, _ = meta_grads(FOMAML(model, inner_lr=0.3, inner_steps=2), tasks)
    _, so_ref, _ = meta_grads(MAML(model, inner_lr=0.3, inner_steps=2), tasks)
    assert max_diff(meta_grads(annealed, tasks, iteration=9)[1], fo_ref) < 1e-12
    assert max_diff(meta_grads(annealed, tasks, iteration=10)[1], so_ref) < 1e-12
    assert max_diff(meta_grads(annealed, tasks)[1], so_ref) < 1e-12  # None: annealing finished


# --------------------------------------------------------------------------- variants


def test_meta_sgd_learned_rates_get_gradients_and_match_scalar_rate_at_init():
    model = tiny_mlp()
    tasks = make_tasks((4,))
    algo = MetaSGD(model, inner_lr=0.3)
    assert set(algo.inner_lrs.keys()) == {n.replace(".", "__") for n, _ in model.named_parameters()}
    for n, p in model.named_parameters():
        lr = algo.inner_lrs[n.replace(".", "__")]
        assert lr.shape == p.shape and torch.all(lr == 0.3)
    loss, _ = algo.outer_loss(*tasks)
    loss.backward()
    for lr in algo.inner_lrs.values():
        assert lr.grad is not None and float(lr.grad.abs().sum()) > 0
    plain = MAML(model, inner_lr=0.3)
    _, g_plain, _ = meta_grads(plain, tasks)
    _, g_sgd, _ = meta_grads(algo, tasks)
    assert max_diff(g_sgd[: len(g_plain)], g_plain) < 1e-12  # model grads agree at initialisation


def test_lslr_rates_per_step_get_gradients():
    model = tiny_mlp()
    algo = MAML(model, inner_lr=0.3, inner_steps=3, learn_inner_lr="per_layer_per_step")
    for lr in algo.inner_lrs.values():
        assert lr.shape == (3,)
    loss, _ = algo.outer_loss(*make_tasks((4,)))
    loss.backward()
    for lr in algo.inner_lrs.values():
        assert bool((lr.grad != 0).all())


def test_learned_rates_change_adaptation():
    model = tiny_mlp()
    sx, sy, _, _ = make_tasks((4,), tasks=1)
    algo = MetaSGD(model, inner_lr=0.3)
    with torch.no_grad():
        for lr in algo.inner_lrs.values():
            lr.fill_(0.1)
    phi = algo.adapt(sx[0], sy[0]).params
    ref = MAML(model, inner_lr=0.1).adapt(sx[0], sy[0]).params
    assert max_diff(phi.values(), ref.values()) < 1e-12


def test_anil_adapts_only_head_and_caching_is_exact():
    model = tiny_conv()
    tasks = make_tasks((1, 16, 16))
    algo = ANIL(model, inner_lr=0.3, inner_steps=3)
    assert algo.adapt_names == ["head.weight", "head.bias"]
    predictor = algo.adapt(tasks[0][0], tasks[1][0])
    for name, p in model.named_parameters():
        same = torch.equal(predictor.params[name], p)
        assert same == (not name.startswith("head."))
    # the trunk-features-once path equals running the whole model every inner step
    generic = ANIL(model, inner_lr=0.3, inner_steps=3)
    generic._head_only = False
    for fo in (False, True):
        algo.first_order = generic.first_order = fo
        la, ga, _ = meta_grads(algo, tasks)
        lb, gb, _ = meta_grads(generic, tasks)
        assert float(la) == pytest.approx(float(lb), abs=1e-12)
        assert max_diff(ga, gb) < 1e-10
    assert float(meta_grads(algo, tasks)[1][0].abs().sum()) > 0  # the trunk is meta-learned


def test_msl_weights_schedule():
    assert msl_weights(3, 0, 10) == pytest.approx([1 / 3] * 3)
    assert msl_weights(3, 5, 10) == pytest.approx([1 / 6, 1 / 6, 2 / 3])
    assert msl_weights(3, 10, 10) == pytest.approx([0, 0, 1])
    assert msl_weights(3, 99, 10) == pytest.approx([0, 0, 1])
    assert msl_weights(3, None, 10) == [0.0, 0.0, 1.0]
    assert msl_weights(1, 0, 10) == [1.0]
    for it in range(12):
        assert math.fsum(msl_weights(4, it, 10)) == pytest.approx(1.0)


def test_multi_step_loss_is_weighted_sum_of_per_step_query_losses():
    model = tiny_mlp()
    sx, sy, qx, qy = make_tasks((4,), tasks=1)
    algo = MAML(model, inner_lr=0.3, inner_steps=3, multi_step_loss=True, msl_iterations=10)
    loss, metrics = algo.outer_loss(sx, sy, qx, qy, iteration=5)
    per_step = []
    with torch.no_grad():
        for k in (1, 2, 3):
            per_step.append(float(F.cross_entropy(algo.adapt(sx[0], sy[0], steps=k)(qx[0]), qy[0])))
    expected = sum(w * lo for w, lo in zip(msl_weights(3, 5, 10), per_step))
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-12)
    assert metrics["objective"] == pytest.approx(expected, abs=1e-12)
    assert metrics["loss"] == pytest.approx(per_step[-1], abs=1e-12)


def test_maml_plus_plus_per_step_bn_and_lslr():
    model = tiny_conv()
    tasks = make_tasks((1, 16, 16))
    algo = MAMLPlusPlus(model, inner_lr=0.2, inner_steps=2, msl_iterations=4, first_order_until=2)
    assert algo.per_step_bn and algo.multi_step_loss and algo.learn_inner_lr == "per_layer_per_step"
    bn = "features__block1__norm__weight"
    assert algo.bn_weights[bn].shape == (2, 4)
    assert not any("norm" in n for n in algo.adapt_names)  # per-step BN is not adapted
    for it in (0, 5):  # first-order phase, then second order
        algo.zero_grad()
        loss, metrics = algo.outer_loss(*tasks, iteration=it)
        loss.backward()
        assert set(metrics) == {"loss", "accuracy", "objective"}
        for lr in algo.inner_lrs.values():
            assert float(lr.grad.abs().sum()) > 0
        grad = algo.bn_weights[bn].grad
        assert float(grad[1].abs().sum()) > 0  # the last step's BN is used by the query pass
    assert float(grad[0].abs().sum()) > 0  # second order reaches the first step's BN weights
    assert model.features.block1.norm.weight.grad is None  # replaced by the per-step copies
    assert set(algo.state_dict()) >= {"bn_weights." + bn, "inner_lrs.head__weight", "model.head.weight"}
    # the predictor is self-contained: it carries the last step's BN weights
    predictor = algo.adapt(tasks[0][0], tasks[1][0])
    name = "features.block1.norm.weight"
    assert torch.equal(predictor.params[name], algo.bn_weights[bn][1])
    assert predictor(tasks[2][0]).shape == (9, 3)


def test_first_order_per_step_bn_has_no_second_order_terms():
    # The BN weights of step 0 act only in the support pass of step 0 (the query pass after two
    # steps uses step 1's), so they reach the outer loss only through the inner gradient: a
    # second-order path, which first-order meta-gradients must drop.
    tasks = make_tasks((1, 16, 16))
    bn = "features__block1__norm__weight"
    grads = {}
    for first_order in (True, False):
        algo = MAML(tiny_conv(), inner_lr=0.2, inner_steps=2, per_step_bn=True, first_order=first_order,
                    learn_inner_lr="per_layer_per_step")
        loss, _ = algo.outer_loss(*tasks)
        loss.backward()
        grads[first_order] = algo.bn_weights[bn].grad
    assert grads[True] is None or float(grads[True][0].abs().max()) == 0.0
    assert float(grads[True][1].abs().sum()) > 0  # the query pass's step still learns directly
    assert float(grads[False][0].abs().sum()) > 0  # second order reaches step 0


def test_batched_vmap_matches_loop():
    tasks = make_tasks((4,), tasks=3)
    for kw in ({}, {"learn_inner_lr": "per_param"}, {"inner_steps": 2, "multi_step_loss": True}):
        loop = MAML(tiny_mlp(), inner_lr=0.3, **kw)
        vm = MAML(loop.model, inner_lr=0.3, batched=True, **kw)
        vm.load_state_dict(loop.state_dict())
        la, ga, ma = meta_grads(loop, tasks, iteration=0)
        lb, gb, mb = meta_grads(vm, tasks, iteration=0)
        assert float(la) == pytest.approx(float(lb), abs=1e-12)
        assert max_diff(ga, gb) < 1e-10
        assert ma == pytest.approx(mb)
    # first order through BatchNorm is fine under vmap
    conv_tasks = make_tasks((1, 16, 16))
    model = tiny_conv()
    la, ga, _ = meta_grads(FOMAML(model, inner_lr=0.3), conv_tasks)
    lb, gb, _ = meta_grads(FOMAML(model, inner_lr=0.3, batched=True), conv_tasks)
    assert max_diff(ga, gb) < 1e-10


def test_regression_mse_has_no_accuracy():
    model = create_backbone("mlp").double()  # the 1-40-40-1 sinusoid net
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 10, 1, generator=g, dtype=torch.float64) * 10 - 5
    y = torch.sin(x)
    algo = MAML(model, inner_lr=0.01, loss="mse", eval_inner_steps=3)
    loss, metrics = algo.outer_loss(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])
    loss.backward()
    assert set(metrics) == {"loss"} and math.isfinite(metrics["loss"])
    ev = algo.evaluate_task(x[0, :5], y[0, :5], x[0, 5:], y[0, 5:])
    assert set(ev) == {"loss", "mse"} and ev["loss"] == ev["mse"]


def test_callable_loss():
    model = tiny_mlp()
    tasks = make_tasks((4,))
    algo = MAML(model, inner_lr=0.3, loss=lambda out, y: F.cross_entropy(out, y, label_smoothing=0.1))
    loss, metrics = algo.outer_loss(*tasks)
    assert "accuracy" in metrics and float(loss.detach()) > 0


# --------------------------------------------------------------------------- API contract


def test_adapt_returns_standalone_predictor_and_leaves_model_untouched():
    model = tiny_conv()
    sx, sy, qx, qy = make_tasks((1, 16, 16), tasks=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    algo = MAML(model, inner_lr=0.3, inner_steps=2, eval_inner_steps=4)
    predictor = algo.adapt(sx[0], sy[0])
    assert isinstance(predictor, AdaptedPredictor)
    loss, _ = algo.outer_loss(sx, sy, qx, qy)
    loss.backward()
    algo.evaluate_task(sx[0], sy[0], qx[0], qy[0])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert set(predictor.params) == {n for n, _ in model.named_parameters()}
    assert any(not torch.equal(predictor.params[n], p) for n, p in model.named_parameters())
    expected = torch.func.functional_call(model, predictor.params, (qx[0],))
    del algo
    out = predictor(qx[0])
    assert out.shape == (9, 3) and torch.allclose(out, expected)
    # differentiable in grad mode, plain under no_grad
    assert predictor.params["head.weight"].requires_grad
    with torch.no_grad():
        plain = MAML(model, inner_lr=0.3).adapt(sx[0], sy[0])
    assert not plain.params["head.weight"].requires_grad


def test_eval_inner_steps_used_in_eval_mode_and_evaluate_task():
    model = tiny_mlp()
    sx, sy, qx, qy = make_tasks((4,), tasks=1)
    algo = MAML(model, inner_lr=0.3, inner_steps=1, eval_inner_steps=5)
    with torch.no_grad():
        five = algo.adapt(sx[0], sy[0], steps=5)(qx[0])
        algo.eval()
        assert torch.allclose(algo.adapt(sx[0], sy[0])(qx[0]), five)
        algo.train()
        assert not torch.allclose(algo.adapt(sx[0], sy[0])(qx[0]), five)
    metrics = algo.evaluate_task(sx[0], sy[0], qx[0], qy[0])
    assert metrics["loss"] == pytest.approx(float(F.cross_entropy(five, qy[0])), abs=1e-12)
    assert metrics["accuracy"] == pytest.approx(float((five.argmax(1) == qy[0]).double().mean()))


def test_evaluate_task_works_under_no_grad_and_builds_no_graph():
    model = tiny_mlp()
    sx, sy, qx, qy = make_tasks((4,), tasks=1)
    algo = MAML(model, inner_lr=0.3)
    with torch.no_grad():
        a = algo.evaluate_task(sx[0], sy[0], qx[0], qy[0])
    b = algo.evaluate_task(sx[0], sy[0], qx[0], qy[0])
    assert a == b


def test_running_stats_model_buffers_untouched_and_batch_stats_used():
    model = create_backbone("conv4", in_channels=1, image_size=16, hidden=4, num_classes=3).double()
    model.eval()  # even in eval mode the algorithm normalises with batch statistics
    tasks = make_tasks((1, 16, 16))
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    algo = MAML(model, inner_lr=0.3)
    loss, _ = algo.outer_loss(*tasks)
    loss.backward()
    algo.evaluate_task(*(t[0] for t in tasks))
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k])
    assert not model.training and not any(m.training for m in model.modules())
    # same numbers as a model without running statistics
    twin = tiny_conv()
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if "running" not in k
                          and "num_batches" not in k})
    other = MAML(twin, inner_lr=0.3).outer_loss(*tasks)[0].detach()
    assert float(other) == pytest.approx(float(loss.detach()), abs=1e-12)
    with pytest.raises(ConfigError, match="running statistics"):
        MAML(model, batched=True, first_order=True)


def test_parameters_and_state_dict_cover_meta_parameters():
    model = tiny_mlp()
    algo = MetaSGD(model)
    n_model = len(list(model.parameters()))
    assert len(list(algo.parameters())) == 2 * n_model
    keys = set(algo.state_dict())
    assert "model.head.weight" in keys and "inner_lrs.head__weight" in keys
    fresh = MetaSGD(tiny_mlp())
    fresh.load_state_dict(algo.state_dict())
    for a, b in zip(fresh.parameters(), algo.parameters()):
        assert torch.equal(a, b)


def test_inner_loop_history_and_tracking():
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    hist = inner_loop(lambda p, s: (p["w"] ** 2).sum(), {"w": w}, ["w"], 2, lambda s, n: 0.25)
    assert len(hist) == 3
    assert torch.allclose(hist[1]["w"], w * 0.5) and torch.allclose(hist[2]["w"], w * 0.25)
    (g,) = torch.autograd.grad(hist[2]["w"].sum(), [w])
    assert torch.allclose(g, torch.full_like(w, 0.25))
    untracked = inner_loop(lambda p, s: (p["w"] ** 2).sum(), {"w": w}, ["w"], 1, lambda s, n: 0.25,
                           track=False)
    assert not untracked[-1]["w"].requires_grad


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"inner_lr": 0.0}, r"inner_lr .*> 0, got 0.0"),
        ({"inner_lr": -0.1}, r"inner_lr .*got -0.1"),
        ({"inner_lr": float("nan")}, r"inner_lr .*finite"),
        ({"inner_lr": float("inf")}, r"inner_lr .*got inf"),
        ({"inner_lr": "0.1"}, r"inner_lr .*'0.1'"),
        ({"inner_steps": 0}, r"inner_steps must be an integer >= 1, got 0"),
        ({"inner_steps": 1.5}, r"inner_steps .*1.5"),
        ({"eval_inner_steps": 0}, r"eval_inner_steps .*got 0"),
        ({"loss": "hinge"}, r"loss must be one of \['cross_entropy', 'mse'\] or a callable, got 'hinge'"),
        ({"learn_inner_lr": "per_step"}, r"learn_inner_lr must be one of .*'per_step'"),
        ({"adapt": r"^nothing\."}, r"adapt regex '\^nothing\\\\.' matches no parameter \(parameters: features"),
        ({"adapt": "("}, r"adapt regex '\(' is invalid"),
        ({"msl_iterations": 0}, r"msl_iterations .*got 0"),
        ({"first_order_until": -1}, r"first_order_until .*got -1"),
        ({"batched": "yes"}, r"batched must be None, True or False, got 'yes'"),
    ],
)
def test_config_errors(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        MAML(tiny_mlp(), **kwargs)
    assert "\n" not in str(info.value)


def test_per_step_bn_needs_batchnorm_and_batched_second_order_refused_with_bn():
    with pytest.raises(ConfigError, match="per_step_bn=True but model Backbone has no affine BatchNorm"):
        MAML(tiny_mlp(), per_step_bn=True)
    with pytest.raises(ConfigError, match="batched=True with second-order gradients is refused"):
        MAML(tiny_conv(), batched=True)
    with pytest.raises(ConfigError, match="FOMAML is first-order"):
        FOMAML(tiny_mlp(), first_order=False)
    headless = create_backbone("mlp", in_features=4, hidden=(6,), num_classes=None)
    with pytest.raises(ConfigError, match=r"ANIL needs a backbone with a head \(create_backbone"):
        ANIL(headless)


def test_shape_errors():
    algo = MAML(tiny_mlp(), inner_lr=0.3)
    sx, sy, qx, qy = make_tasks((4,), tasks=2)
    cases = [
        ((sx, sy, qx[:1], qy[:1]), r"support and query task counts differ: support_x 2x6x4 vs query_x 1x9x4"),
        ((sx, sy[:, :5], qx, qy), r"support_x and support_y task and example counts differ: 2x6x4 vs 2x5"),
        ((sx, sy, qx, qy[:, :3]), r"query_x and query_y task and example counts differ"),
        ((sx[0], sy[0], qx, qy), r"support_x/support_y must have shape \[B, n, ...\], got 6x4 and 6"),
        ((sx, sy, torch.randn(2, 9, 5, dtype=torch.float64), qy), r"example shapes differ"),
        ((sx, sy.double(), qx, qy), r"cross_entropy' needs integer class labels"),
        ((torch.randn(2, 6, 5, dtype=torch.float64), sy, torch.randn(2, 9, 5, dtype=torch.float64), qy),
         r"mlp expects inputs of 4, got 5"),
    ]
    for args, pattern in cases:
        with pytest.raises(ConfigError, match=pattern) as info:
            algo.outer_loss(*args)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="support_x and support_y example counts differ"):
        algo.adapt(sx[0], sy[0, :3])
    with pytest.raises(ConfigError, match="query_x and query_y example counts differ"):
        algo.evaluate_task(sx[0], sy[0], qx[0], qy[0, :2])


# --------------------------------------------------------------------------- learning


def test_maml_learns_gaussian_few_shot():
    torch.manual_seed(0)
    algo = MAML(create_backbone("mlp", in_features=10, hidden=(32,), num_classes=5), inner_lr=0.5)
    test = gaussian_tasks(torch.Generator().manual_seed(123), 50)
    before = mean_accuracy(algo, test)
    opt = torch.optim.Adam(algo.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    for it in range(150):
        loss, _ = algo.outer_loss(*gaussian_tasks(gen, 8), iteration=it)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mean_accuracy(algo, test)
    assert after > 0.6 and after > before + 0.2, (before, after)  # chance is 0.2
