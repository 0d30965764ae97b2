"""ProtoNet ensembles: several embedding networks as one (logits summed), from the library and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

from meta.fewshot import load_fewshot_checkpoint, load_fewshot_checkpoints
from meta.protonet import EmbeddingEnsemble, ProtoNet
from mtl import create_backbone
from mtl.cli import main
from mtl.data.glyphs import make_glyphs
from mtl.errors import ConfigError


def _net(seed, **kwargs):
    torch.manual_seed(seed)
    return create_backbone("conv4", in_channels=1, image_size=16, hidden=4, **kwargs).double()


def _task(seed=0):
    g = torch.Generator().manual_seed(seed)
    sx, qx = torch.rand(6, 1, 16, 16, generator=g).double(), torch.rand(9, 1, 16, 16, generator=g).double()
    return sx, torch.tensor([0, 1, 2, 0, 1, 2]), qx, torch.tensor([0, 1, 2] * 3)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_ensemble_logits_are_the_sum_of_member_logits(mode):
    a, b = _net(0), _net(1, final_pool=False)  # members may differ in embedding size
    for m in (a, b):  # non-trivial running statistics, so eval mode differs from train mode
        m.train()
        with torch.no_grad():
            m(torch.rand(8, 1, 16, 16, dtype=torch.float64))
    ens = ProtoNet(EmbeddingEnsemble([a, b]))
    getattr(ens, mode)()
    sx, sy, qx, _ = _task()
    with torch.no_grad():
        members = [getattr(ProtoNet(m), mode)().adapt(sx, sy)(qx) for m in (a, b)]
        together = ens.adapt(sx, sy)(qx)
    torch.testing.assert_close(together, members[0] + members[1])
    assert not torch.allclose(together, members[0])


def test_ensemble_embedding_equals_the_members_called_as_modules():
    a, b = _net(0), _net(1)
    ens = EmbeddingEnsemble([a, b]).eval()
    x = torch.rand(5, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ens(x), torch.cat([a(x).flatten(1), b(x).flatten(1)], 1))


def test_ensemble_trains_every_member():
    ens = ProtoNet(EmbeddingEnsemble([_net(0), _net(1)]))
    sx, sy, qx, qy = _task()
    ens.outer_backward(sx[None], sy[None], qx[None], qy[None])
    grads = [p.grad for p in ens.parameters()]
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_ensemble_test_shift_applies_to_the_whole_embedding():
    a, b = _net(0), _net(1)
    ens = ProtoNet(EmbeddingEnsemble([a, b]), test_shift=1).eval()
    sx, sy, qx, _ = _task()
    with torch.no_grad():
        members = [ProtoNet(m, test_shift=1).eval().adapt(sx, sy)(qx) for m in (a, b)]
        torch.testing.assert_close(ens.adapt(sx, sy)(qx), members[0] + members[1])


@pytest.mark.parametrize("members, message", [
    ([], "members must be a non-empty list"),
    ("conv4", "members must be a non-empty list"),
    ([nn.Linear(2, 2), "x"], r"members\[1\] must be a torch.nn.Module"),
])
def test_bad_members_are_refused(members, message):
    with pytest.raises(ConfigError, match=message):
        EmbeddingEnsemble(members)


def test_member_with_a_head_is_refused():
    with pytest.raises(ConfigError, match=r"members\[0\] must be a headless embedding network"):
        EmbeddingEnsemble([create_backbone("conv4", in_channels=1, image_size=16, hidden=4, num_classes=3)])


TINY = ["--glyph-classes", "12,6,6", "--backbone-kwargs", '{"hidden": 8}', "--queries", "3",
        "--validation-tasks", "4", "--test-tasks", "6", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ensemble")
    for name, algo, seed in (("pn0", "protonet", "0"), ("pn1", "protonet", "1"), ("fo", "fomaml", "0")):
        assert main(["fewshot", "train", "--algo", algo, "--budget-iterations", "2", "--meta-batch", "1",
                     "--seed", seed, "--out", str(out / name), *TINY]) == 0
    return out


def test_load_ensemble_of_one_is_that_checkpoint(trained):
    path = str(trained / "pn0" / "best.pt")
    _, alone, _ = load_fewshot_checkpoint(path)
    _, one, _ = load_fewshot_checkpoints([path])
    assert not isinstance(one.model, EmbeddingEnsemble)
    for (k, v), (k2, v2) in zip(alone.state_dict().items(), one.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_cli_evaluate_ensemble_sums_member_logits(trained, tmp_path, capsys):
    paths = [str(trained / "pn0" / "best.pt"), str(trained / "pn1" / "best.pt")]
    _, a, _ = load_fewshot_checkpoint(paths[0])
    _, b, _ = load_fewshot_checkpoint(paths[1])
    _, ens, _ = load_fewshot_checkpoints(paths)
    for m in (a, b, ens):
        m.eval()
    g = torch.Generator().manual_seed(0)
    sx, qx = torch.rand(6, *a.model.input_shape, generator=g), torch.rand(9, *a.model.input_shape, generator=g)
    sy = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(ens.adapt(sx, sy)(qx), a.adapt(sx, sy)(qx) + b.adapt(sx, sy)(qx))
    out = tmp_path / "ens.json"
    capsys.readouterr()
    assert main(["fewshot", "evaluate", "--checkpoint", *paths, "--test-tasks", "6", "--no-progress",
                 "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "ensemble of 2 ProtoNet checkpoints" in captured.err
    res = json.loads(out.read_text())
    assert res["checkpoint"] == paths and res["test_tasks"] == 6 and 0.0 <= res["accuracy"] <= 1.0


def test_cli_ensemble_refuses_other_algorithms_and_repeats(trained, capsys):
    pn, fo = str(trained / "pn0" / "best.pt"), str(trained / "fo" / "best.pt")
    code = main(["fewshot", "evaluate", "--checkpoint", pn, fo, "--test-tasks", "6", "--no-progress"])
    assert code == 2 and f"an ensemble of checkpoints must be ProtoNets; {fo!r} is fomaml" in capsys.readouterr().err
    code = main(["fewshot", "evaluate", "--checkpoint", pn, pn, "--test-tasks", "6", "--no-progress"])
    assert code == 2 and "each may be given once" in capsys.readouterr().err


def test_cli_predict_with_an_ensemble(trained, tmp_path, capsys):
    data = make_glyphs(3, samples_per_class=3, seed=5)
    support, query = tmp_path / "support", tmp_path / "query"
    query.mkdir()
    for c, name in enumerate(["alpha", "beta", "gamma"]):
        (support / name).mkdir(parents=True)
        idx = (data.targets == c).nonzero().flatten()
        for j in idx[:2]:
            Image.fromarray((data.images[j, 0].numpy() * 255).astype("uint8")).save(support / name / f"{int(j)}.png")
        Image.fromarray((data.images[idx[2], 0].numpy() * 255).astype("uint8")).save(query / f"{name}.png")
    paths = [str(trained / "pn0" / "best.pt"), str(trained / "pn1" / "best.pt")]
    probs = {}
    for key, ckpts in (("a", paths[:1]), ("b", paths[1:]), ("ab", paths)):
        out = tmp_path / f"{key}.json"
        assert main(["fewshot", "predict", "--checkpoint", *ckpts, "--support", str(support), "--query", str(query),
                     "--json", str(out)]) == 0, capsys.readouterr().err
        res = json.loads(out.read_text())
        assert res["checkpoint"] == (ckpts[0] if len(ckpts) == 1 else ckpts)
        probs[key] = {p["file"]: p["probability"] for p in res["predictions"]}
    assert sorted(probs["ab"]) == ["alpha.png", "beta.png", "gamma.png"]
    assert probs["ab"] != probs["a"] and probs["ab"] != probs["b"]
