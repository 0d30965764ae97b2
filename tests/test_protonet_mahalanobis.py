"""ProtoNet with a squared Mahalanobis distance from the training classes' within-class covariance."""

from __future__ import annotations

import json

import pytest
import torch
from fewshot_helpers import tiny_checkpoints

from meta.protonet import ProtoNet, prototype_logits, prototypes, within_class_whitening
from mtl import create_backbone
from mtl.cli import main
from mtl.errors import ConfigError


def _cloud(seed=0, classes=6, per=40):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, 3, generator=g, dtype=torch.float64) * 3
    noise = torch.randn(classes * per, 3, generator=g, dtype=torch.float64) @ torch.tensor(
        [[2.0, 0.0, 0.0], [0.5, 0.3, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return means.repeat_interleave(per, 0) + noise, torch.arange(classes).repeat_interleave(per)


def test_whitening_gives_mahalanobis_distances_of_the_shrunk_within_class_covariance():
    x, y = _cloud()
    for lam in (0.0, 0.3, 1.0):
        w = within_class_whitening(x, y, lam)
        means = torch.stack([x[y == c].mean(0) for c in range(6)])
        centred = x - means[y]
        cov = centred.t() @ centred / (len(x) - 6)
        cov = (1 - lam) * cov + lam * cov.trace() / 3 * torch.eye(3, dtype=x.dtype)
        a, b = x[:5], x[-5:]
        expected = ((a - b) @ torch.linalg.inv(cov) * (a - b)).sum(1)
        torch.testing.assert_close(((a @ w - b @ w) ** 2).sum(1), expected)
    # full shrinkage is the Euclidean metric up to one scale: the same nearest prototype
    w1 = within_class_whitening(x, y, 1.0)
    torch.testing.assert_close(w1 / w1[0, 0], torch.eye(3, dtype=x.dtype))


def test_whitening_helps_when_classes_vary_along_a_shared_direction():
    # every class spreads widely along the first axis; the classes differ along the second
    g = torch.Generator().manual_seed(3)

    def draw(means, per):
        spread = torch.randn(len(means) * per, 2, generator=g, dtype=torch.float64) * torch.tensor([3.0, 0.2],
                                                                                                   dtype=torch.float64)
        return means.repeat_interleave(per, 0) + spread, torch.arange(len(means)).repeat_interleave(per)

    train_x, train_y = draw(torch.randn(20, 2, generator=g, dtype=torch.float64), 10)
    w = within_class_whitening(train_x, train_y, 0.0)
    new = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    sx, sy = draw(new, 1)
    qx, qy = draw(new, 50)

    def accuracy(m):
        return float((prototype_logits(qx @ m, prototypes(sx @ m, sy)).argmax(1) == qy).double().mean())

    assert accuracy(w) > accuracy(torch.eye(2, dtype=torch.float64)) + 0.2


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.3", True])
def test_bad_shrinkage_is_refused(bad):
    x, y = _cloud()
    with pytest.raises(ConfigError, match="shrinkage must be a number in \\[0, 1\\]"):
        within_class_whitening(x, y, bad)


def test_degenerate_inputs_are_refused():
    x, y = _cloud()
    with pytest.raises(ConfigError, match="needs a class with two or more examples"):
        within_class_whitening(x[:3], torch.arange(3), 0.5)
    flat = torch.cat([x[:, :1], torch.zeros(len(x), 2, dtype=x.dtype)], 1)  # no spread in two dimensions
    with pytest.raises(ConfigError, match="singular"):
        within_class_whitening(flat, y, 0.0)
    assert torch.isfinite(within_class_whitening(flat, y, 0.1)).all()


def test_protonet_applies_the_whitening_in_eval_mode_only():
    torch.manual_seed(0)
    net = create_backbone("conv4", in_channels=1, image_size=16, hidden=4).double()
    algo = ProtoNet(net)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(24, 1, 16, 16, generator=g).double(), torch.arange(6).repeat_interleave(4)
    w = algo.fit_whitening(images, labels, 0.3)
    assert algo.training and algo.whitening is w and w.shape == (4, 4)  # conv4 hidden=4: 4 features
    with torch.no_grad():
        emb = algo.eval()._embed(None, images)
    torch.testing.assert_close(w, within_class_whitening(emb, labels, 0.3))
    assert algo.fit_whitening(images, labels, 0.3) is not w  # refitting starts from the plain embedding
    torch.testing.assert_close(algo.whitening, w)
    sx, sy, qx = images[::4], torch.arange(6), images[1::4]
    with torch.no_grad():
        expected = prototype_logits(emb[1::4] @ w, prototypes(emb[::4] @ w, sy))
        torch.testing.assert_close(algo.eval().adapt(sx, sy)(qx), expected)
        loss = algo.evaluate_task(sx, sy, qx, sy)["loss"]
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(expected, sy)))
    trained = algo.train().outer_loss(sx[None], sy[None], qx[None], sy[None])[0]
    plain = ProtoNet(net).train().outer_loss(sx[None], sy[None], qx[None], sy[None])[0]
    assert torch.equal(trained, plain)
    with pytest.raises(ConfigError, match="whitening must be a square"):
        ProtoNet(net, whitening=torch.ones(3, 4))


def test_cli_evaluate_mahalanobis(tmp_path, capsys):
    ckpts = tiny_checkpoints(tmp_path, ("protonet", "fomaml"))
    capsys.readouterr()
    proto = ckpts["protonet"]
    assert main(["fewshot", "evaluate", "--checkpoint", proto, "--test-tasks", "6", "--mahalanobis", "0.5",
                 "--mahalanobis-images", "3", "--no-progress", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr()
    assert "Mahalanobis distance (shrinkage 0.5)" in out.out
    assert "within-class covariance of 36 training images (12 classes)" in out.err
    record = json.loads((tmp_path / "r.json").read_text())["mahalanobis"]
    assert record["shrinkage"] == 0.5 and record["images"] == 36 and record["classes"] == 12
    for ckpt, bad, message in (
        (ckpts["fomaml"], "0.5", "--mahalanobis is a ProtoNet distance"),
        (proto, "1.5", "shrinkage must be a number in [0, 1], got 1.5"),
    ):
        code = main(["fewshot", "evaluate", "--checkpoint", ckpt, "--test-tasks", "6", "--mahalanobis", bad,
                     "--no-progress"])
        assert code == 2 and message in capsys.readouterr().err
