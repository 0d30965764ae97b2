"""Transductive ProtoNet test (Ren et al. 2018 soft k-means): prototypes refined with the queries in eval mode."""

from __future__ import annotations

import json

import pytest
import torch
from fewshot_helpers import tiny_checkpoints

from meta.protonet import ProtoNet, prototype_logits, prototypes, soft_kmeans_prototypes
from mtl import create_backbone
from mtl.cli import main
from mtl.errors import ConfigError


def test_zero_steps_are_the_support_prototypes():
    g = torch.Generator().manual_seed(0)
    s, q = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.equal(soft_kmeans_prototypes(s, y, q, 0), prototypes(s, y))


def test_one_step_is_the_weighted_mean_of_support_and_assigned_queries():
    g = torch.Generator().manual_seed(1)
    s, q = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 2])
    p0 = prototypes(s, y)
    z = torch.softmax(-torch.cdist(q, p0) ** 2, dim=1)
    counts = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)
    expected = torch.stack([(p0[c] * counts[c] + (z[:, c:c + 1] * q).sum(0)) / (counts[c] + z[:, c].sum())
                            for c in range(3)])
    torch.testing.assert_close(soft_kmeans_prototypes(s, y, q, 1), expected)
    cos = soft_kmeans_prototypes(s, y, q, 1, "cosine", 5.0)
    zc = torch.softmax(prototype_logits(q, p0, "cosine", 5.0), dim=1)
    torch.testing.assert_close(cos[2], (p0[2] + (zc[:, 2:3] * q).sum(0)) / (1 + zc[:, 2].sum()))


def test_refinement_pulls_an_off_centre_prototype_to_its_queries():
    # two clusters of queries; class 0's only support example sits near the boundary
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    q = torch.cat([c + 0.3 * torch.randn(20, 2, generator=g, dtype=torch.float64) for c in centres])
    qy = torch.arange(2).repeat_interleave(20)
    s, sy = torch.tensor([[1.3, 0.0], [2.0, 0.0]], dtype=torch.float64), torch.arange(2)

    def accuracy(steps):
        return float((prototype_logits(q, soft_kmeans_prototypes(s, sy, q, steps)).argmax(1) == qy).double().mean())

    assert accuracy(0) <= 0.95  # two of class 1's queries fall on class 0's side
    assert accuracy(5) == 1.0
    assert soft_kmeans_prototypes(s, sy, q, 5)[0, 0] < 0.7  # moved most of the way to its cluster


def _algo(steps):
    torch.manual_seed(0)
    return ProtoNet(create_backbone("conv4", in_channels=1, image_size=16, hidden=4).double(),
                    transductive_steps=steps)


def _task(seed=0):
    g = torch.Generator().manual_seed(seed)
    sx, qx = torch.rand(3, 1, 16, 16, generator=g).double(), torch.rand(9, 1, 16, 16, generator=g).double()
    return sx, torch.arange(3), qx, torch.tensor([0, 1, 2] * 3)


def test_eval_mode_classifies_queries_against_refined_prototypes():
    algo = _algo(3).eval()
    sx, sy, qx, qy = _task()
    with torch.no_grad():
        es, eq = algo._embed(None, sx), algo._embed(None, qx)
        logits = prototype_logits(eq, soft_kmeans_prototypes(es, sy, eq, 3))
        predictor = algo.adapt(sx, sy)
        torch.testing.assert_close(predictor(qx), logits)
        torch.testing.assert_close(predictor.prototypes, prototypes(es, sy))  # the support prototypes
        inductive = _algo(0).eval().adapt(sx, sy)(qx)
    assert not torch.allclose(inductive, logits)
    metrics = algo.evaluate_task(sx, sy, qx, qy)
    assert metrics["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, qy)))
    # training is the paper's: no refinement
    la, _ = algo.train().outer_loss(sx[None], sy[None], qx[None], qy[None])
    lb, _ = _algo(0).train().outer_loss(sx[None], sy[None], qx[None], qy[None])
    assert torch.equal(la, lb)


@pytest.mark.parametrize("bad", [-1, 101, 2.0, True])
def test_bad_transductive_steps_are_refused(bad):
    with pytest.raises(ConfigError, match="transductive_steps must be an integer in 0..100"):
        _algo(bad)


def test_cli_evaluate_transductive_steps(tmp_path, capsys):
    ckpts = tiny_checkpoints(tmp_path, ("protonet", "fomaml"))
    capsys.readouterr()
    proto = ckpts["protonet"]
    assert main(["fewshot", "evaluate", "--checkpoint", proto, "--test-tasks", "6", "--transductive-steps", "2",
                 "--no-progress", "--json", str(tmp_path / "r.json")]) == 0
    assert "transductive: 2 soft k-means steps" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["transductive_steps"] == 2
    for ckpt, bad, message in (
        (ckpts["fomaml"], "2", "--transductive-steps refines ProtoNet prototypes"),
        (proto, "101", "transductive_steps must be an integer in 0..100, got 101"),
    ):
        code = main(["fewshot", "evaluate", "--checkpoint", ckpt, "--test-tasks", "6", "--transductive-steps", bad,
                     "--no-progress"])
        assert code == 2 and message in capsys.readouterr().err
