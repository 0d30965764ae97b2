"""ProtoNet test-time shifts: eval-mode embeddings averaged over shifted copies; training unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from fewshot_helpers import tiny_checkpoints

from meta.protonet import ProtoNet, prototype_logits, prototypes
from mtl import create_backbone
from mtl.cli import main
from mtl.data import rotate
from mtl.errors import ConfigError


def _algo(shift):
    torch.manual_seed(0)
    return ProtoNet(create_backbone("conv4", in_channels=1, image_size=16, hidden=4).double(), test_shift=shift)


def _task(seed=0):
    g = torch.Generator().manual_seed(seed)
    sx, qx = torch.rand(3, 1, 16, 16, generator=g).double(), torch.rand(6, 1, 16, 16, generator=g).double()
    return sx, torch.arange(3), qx, torch.tensor([0, 1, 2, 2, 1, 0])


def test_eval_embeddings_are_means_over_shifted_copies():
    algo = _algo(1).eval()
    sx, sy, qx, qy = _task()

    def mean_emb(x):
        with torch.no_grad():
            return torch.stack([algo._embed(None, torch.roll(x, (dy, dx), (-2, -1)))
                                for dy in (-1, 0, 1) for dx in (-1, 0, 1)]).mean(0)

    logits = prototype_logits(mean_emb(qx), prototypes(mean_emb(sx), sy), "euclidean", 1.0)
    expected = (logits.argmax(1) == qy).double().mean()
    assert algo.evaluate_task(sx, sy, qx, qy)["accuracy"] == pytest.approx(float(expected))
    with torch.no_grad():
        torch.testing.assert_close(algo.adapt(sx, sy)(qx), logits)
    plain = _algo(0).eval()
    with torch.no_grad():
        assert not torch.allclose(plain.adapt(sx, sy)(qx), logits)  # the shifts do change the result


def test_training_ignores_test_shift():
    sx, sy, qx, qy = _task()
    a, b = _algo(2).train(), _algo(0).train()
    la, _ = a.outer_loss(sx[None], sy[None], qx[None], qy[None])
    lb, _ = b.outer_loss(sx[None], sy[None], qx[None], qy[None])
    assert torch.equal(la, lb)


@pytest.mark.parametrize("bad", [-1, 5, 1.5, True])
def test_bad_test_shift_is_refused(bad):
    with pytest.raises(ConfigError, match="test_shift must be an integer number of pixels in 0..4"):
        ProtoNet(create_backbone("conv4", in_channels=1, image_size=16, hidden=4), test_shift=bad)


def test_cli_evaluate_test_shift(tmp_path, capsys):
    ckpts = tiny_checkpoints(tmp_path, ("protonet", "fomaml", "reptile"))
    capsys.readouterr()
    assert main(["fewshot", "evaluate", "--checkpoint", ckpts["protonet"], "--test-tasks", "6",
                 "--test-shift", "1", "--no-progress"]) == 0
    assert "test-time shifts up to 1 px" in capsys.readouterr().out
    assert main(["fewshot", "evaluate", "--checkpoint", ckpts["fomaml"], "--test-tasks", "6",
                 "--test-shift", "1", "--no-progress"]) == 0
    assert "test-time shifts up to 1 px" in capsys.readouterr().out
    code = main(["fewshot", "evaluate", "--checkpoint", ckpts["reptile"], "--test-tasks", "6",
                 "--test-shift", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--test-shift needs protonet or the MAML family" in err
    assert main(["fewshot", "evaluate", "--checkpoint", ckpts["protonet"], "--test-tasks", "6",
                 "--test-shift", "1", "--test-rotate", "8", "--no-progress", "--json", str(tmp_path / "r.json")]) == 0
    assert "test-time shifts up to 1 px, test-time rotations of +-8 degrees" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["test_rotate"] == 8.0
    for bad, message in (("50", "test_rotate must be a number of degrees in [0, 45], got 50.0"),
                         ("8", "--test-rotate needs protonet or the MAML family")):
        ckpt = tmp_path / ("protonet" if bad == "50" else "reptile") / "best.pt"
        code = main(["fewshot", "evaluate", "--checkpoint", str(ckpt), "--test-tasks", "6", "--test-rotate", bad,
                     "--no-progress"])
        assert code == 2 and message in capsys.readouterr().err


def test_rotate_turns_images_about_their_centre():
    x = torch.zeros(2, 1, 9, 9)
    x[:, :, 4, 6] = 1.0  # two pixels right of the centre
    turned = rotate(x, 90.0)
    assert turned.shape == x.shape and torch.equal(rotate(x, 0.0), x)
    # clockwise as displayed (rows downwards): right of the centre moves below it
    assert torch.allclose(turned[:, 0, 6, 4], torch.ones(2), atol=1e-5)
    assert torch.allclose(rotate(rotate(x, 30.0), -30.0).sum(), x.sum(), rtol=0.1)
    with pytest.raises(ConfigError, match="batch of images"):
        rotate(torch.zeros(9, 9), 10.0)


def test_eval_embeddings_are_means_over_rotated_and_shifted_copies():
    torch.manual_seed(0)
    algo = ProtoNet(create_backbone("conv4", in_channels=1, image_size=16, hidden=4).double(), test_shift=1,
                    test_rotate=10.0).eval()
    sx, sy, qx, qy = _task()

    def mean_emb(x):
        with torch.no_grad():
            return torch.stack([algo._embed(None, torch.roll(rotate(x, a), (dy, dx), (-2, -1)))
                                for a in (-10.0, 0.0, 10.0) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]).mean(0)

    logits = prototype_logits(mean_emb(qx), prototypes(mean_emb(sx), sy), "euclidean", 1.0)
    with torch.no_grad():
        torch.testing.assert_close(algo.adapt(sx, sy)(qx), logits)
        shifted_only = ProtoNet(algo.model, test_shift=1).eval().adapt(sx, sy)(qx)
    assert not torch.allclose(shifted_only, logits)  # the rotations do change the result
    expected = (logits.argmax(1) == qy).double().mean()
    assert algo.evaluate_task(sx, sy, qx, qy)["accuracy"] == pytest.approx(float(expected))
    # training ignores it
    la, _ = algo.train().outer_loss(sx[None], sy[None], qx[None], qy[None])
    lb, _ = _algo(0).train().outer_loss(sx[None], sy[None], qx[None], qy[None])
    assert torch.equal(la, lb)


@pytest.mark.parametrize("bad", [-1, 46, "8", True])
def test_bad_test_rotate_is_refused(bad):
    with pytest.raises(ConfigError, match="test_rotate must be a number of degrees in \\[0, 45\\]"):
        ProtoNet(create_backbone("conv4", in_channels=1, image_size=16, hidden=4), test_rotate=bad)
