"""MAML-family test-time views: after adapting on the unchanged support set, query outputs are
averaged over shifted (and rotated) copies of the queries, in eval mode only."""

from __future__ import annotations

import pytest
import torch

from meta.functional import functional_forward
from meta.maml import ANIL, MAML, ProtoMAML
from mtl import create_backbone
from mtl.data import rotate, tta_views
from mtl.errors import ConfigError


def _model(seed=0):
    torch.manual_seed(seed)
    return create_backbone("conv4", in_channels=1, image_size=16, hidden=4, num_classes=3,
                           track_running_stats=False).double()


def _task(seed=0):
    g = torch.Generator().manual_seed(seed)
    sx, qx = torch.rand(3, 1, 16, 16, generator=g).double(), torch.rand(9, 1, 16, 16, generator=g).double()
    return sx, torch.arange(3), qx, torch.tensor([0, 1, 2] * 3)


def _views(x):
    return [torch.roll(rotate(x, a), (dy, dx), (-2, -1)) for a in (-10.0, 0.0, 10.0)
            for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def test_tta_views_are_the_shifted_and_rotated_copies():
    x = torch.rand(2, 1, 8, 8)
    views = tta_views(x, 1, 10.0)
    assert len(views) == 27 and views[0] is x
    expected = _views(x)
    for v in expected:  # the same set, whatever the order
        assert any(torch.equal(v, w) for w in views)
    assert len(tta_views(x, 2)) == 25 and tta_views(x)[0] is x and len(tta_views(x, 0, 5.0)) == 3


@pytest.mark.parametrize("cls", [MAML, ANIL, ProtoMAML])
def test_eval_outputs_are_means_over_query_views(cls):
    sx, sy, qx, qy = _task()
    algo = cls(_model(), inner_lr=0.3, inner_steps=2, test_shift=1, test_rotate=10.0).eval()
    plain = cls(algo.model, inner_lr=0.3, inner_steps=2).eval()
    with torch.no_grad():
        adapted = plain.adapt(sx, sy)
        tta = algo.adapt(sx, sy)
        # the inner loop sees the support set unchanged: same adapted parameters
        for name, value in adapted.params.items():
            assert torch.equal(value, tta.params[name])
        expected = torch.stack([adapted(v) for v in _views(qx)]).mean(0)
        torch.testing.assert_close(tta(qx), expected)
        assert not torch.allclose(adapted(qx), expected)  # the views do change the outputs
    metrics = algo.evaluate_task(sx, sy, qx, qy, at_steps=[1])
    assert metrics["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(expected, qy)))
    assert metrics["accuracy"] == pytest.approx(float((expected.argmax(1) == qy).double().mean()))
    with torch.no_grad():
        one_step = plain.adapt(sx, sy, steps=1)
        at_one = torch.stack([one_step(v) for v in _views(qx)]).mean(0)
    assert metrics["loss@1"] == pytest.approx(float(torch.nn.functional.cross_entropy(at_one, qy)))


def test_training_ignores_test_views():
    sx, sy, qx, qy = _task()
    algo = MAML(_model(), inner_lr=0.3, test_shift=2, test_rotate=15.0).train()
    plain = MAML(_model(), inner_lr=0.3).train()
    la, _ = algo.outer_loss(sx[None], sy[None], qx[None], qy[None])
    lb, _ = plain.outer_loss(sx[None], sy[None], qx[None], qy[None])
    assert torch.equal(la, lb)
    with torch.no_grad():
        out = algo.adapt(sx, sy)(qx)  # train mode: the plain query pass
        params = algo.adapt(sx, sy).params
        assert torch.equal(out, functional_forward(algo.model, params, {}, qx))


@pytest.mark.parametrize(("field", "bad", "message"), [
    ("test_shift", 5, "test_shift must be an integer number of pixels in 0..4"),
    ("test_shift", 1.0, "test_shift must be an integer number of pixels in 0..4"),
    ("test_rotate", 60, "test_rotate must be a number of degrees in \\[0, 45\\]"),
    ("test_rotate", -1.0, "test_rotate must be a number of degrees in \\[0, 45\\]"),
])
def test_bad_test_views_are_refused(field, bad, message):
    with pytest.raises(ConfigError, match=message):
        MAML(_model(), **{field: bad})
    with pytest.raises(ConfigError, match=message):
        tta_views(torch.zeros(1, 1, 4, 4), **{"shift" if field == "test_shift" else "degrees": bad})
