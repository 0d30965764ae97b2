"""bfloat16 autocast in the supervised loops (train_classifier and what runs on it): distillation,
fine-tuning, self-training, classifier pre-training, and their CLIs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from meta.selftrain import OnlineConfig, SelfTrainConfig, self_train, split_labelled_unlabelled
from mtl import create_backbone
from mtl.cli import main
from mtl.data import LabelledImages
from mtl.distill import DistillConfig, distill
from mtl.errors import CheckpointError, ConfigError
from mtl.training import AutocastForward, evaluate_classifier, train_classifier
from mtl.transfer.regimes import FineTuneRecipe
from mtl.utils import load_checkpoint


def _blobs(n_per_class=24, classes=3, seed=0):
    """Three separable classes of 1x16x16 images (a bright square in one of three places, plus noise)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = 0.3 * torch.rand(len(y), 1, 16, 16, generator=g)
    for c in range(classes):
        x[y == c, :, 4 * c:4 * c + 5, 4 * c:4 * c + 5] += 0.7
    return LabelledImages(x, y)


def _conv(seed=0):
    torch.manual_seed(seed)
    return create_backbone("conv4", in_channels=1, image_size=16, hidden=8, num_classes=3)


def _train(precision, seen=None, epochs=3):
    model = _conv()
    convs = []
    model.features.block1.conv.register_forward_hook(lambda m, i, o: convs.append(o.dtype))

    def batch_loss(net, x, y, index):
        logits = net(x)
        if seen is not None:
            seen.append(logits.dtype)
        return F.cross_entropy(logits, y)

    history = train_classifier(model, _blobs(), epochs=epochs, batch_size=12, lr=1e-2, batch_loss=batch_loss,
                               progress=False, precision=precision)
    return model, history, convs


def test_bf16_runs_the_network_in_bfloat16_and_the_loss_in_float32():
    seen = []
    model, history, convs = _train("bf16", seen)
    assert set(convs) == {torch.bfloat16}  # the forward pass ran under autocast
    assert set(seen) == {torch.float32}  # the batch loss got float32 logits
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert history.train_loss[-1] < history.train_loss[0]  # it learns
    assert evaluate_classifier(model, _blobs(seed=1))["accuracy"] > 0.9


def test_bf16_changes_training_and_fp32_is_the_default_path():
    full, _, convs = _train("fp32")
    half, _, _ = _train("bf16")
    assert set(convs) == {torch.float32}
    name = "features.block1.conv.weight"
    start = dict(_conv().named_parameters())[name].detach()
    w_full, w_half = (dict(m.named_parameters())[name].detach() for m in (full, half))
    assert not torch.equal(w_full, w_half)  # other rounding, other weights
    # the same training all the same: the updates point the same way (cosine 0.86 measured after 18 Adam steps)
    assert F.cosine_similarity((w_half - start).flatten(), (w_full - start).flatten(), dim=0) > 0.6
    assert evaluate_classifier(full, _blobs(seed=1))["accuracy"] > 0.9


def test_autocast_forward_keeps_the_wrapped_model_in_charge():
    model = _conv()
    wrapped = AutocastForward(model, "cpu")
    x = torch.rand(4, 1, 16, 16)
    out = wrapped(x)
    assert out.dtype == torch.float32
    with torch.no_grad():
        ref = model(x)
    assert not torch.equal(out.detach(), ref) and torch.allclose(out.detach(), ref, rtol=0.05, atol=0.05)
    assert list(wrapped.parameters()) == list(model.parameters())  # nothing of its own


@pytest.mark.parametrize("make", [
    lambda p: train_classifier(_conv(), _blobs(), epochs=1, progress=False, precision=p),
    lambda p: DistillConfig(precision=p),
    lambda p: SelfTrainConfig(precision=p),
    lambda p: OnlineConfig(precision=p),
    lambda p: FineTuneRecipe(precision=p),
])
def test_bad_precision_is_refused_by_name(make):
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, got 'fp16'"):
        make("fp16")


def test_distill_in_bf16_learns_from_a_teacher():
    data = _blobs()
    teacher, _, _ = _train("fp32", epochs=4)
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = DistillConfig(temperature=4.0, alpha=0.3, epochs=3, batch_size=12, lr=1e-2, precision=precision)
        runs[precision] = distill(teacher, lambda: _conv(seed=1), data, cfg, test=_blobs(seed=1))
    half, full = runs["bf16"], runs["fp32"]
    assert half.config["precision"] == "bf16"
    assert half.accuracy > 0.9 and half.agreement > 0.9
    assert not torch.equal(half.test_logits, full.test_logits)


def test_selftrain_bf16_is_part_of_the_run_identity(tmp_path):
    labelled, pool = split_labelled_unlabelled(_blobs(n_per_class=12), 2, seed=0)
    model = lambda: _conv()  # noqa: E731
    common = dict(rounds=1, k_per_class=2, threshold=None, epochs=2, batch_size=8, lr=1e-2)
    ckpt = tmp_path / "last.pt"
    self_train(model, labelled, pool, SelfTrainConfig(precision="bf16", **common), log=None, checkpoint=ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="precision"):
        self_train(model, labelled, pool, SelfTrainConfig(**common), log=None, checkpoint=ckpt, resume=True)
    assert ckpt.read_bytes() == before
    self_train(model, labelled, pool, SelfTrainConfig(precision="bf16", **common), log=None, checkpoint=ckpt,
               resume=True)
    # a float32 run's identity has no precision key: checkpoints written before the option still resume
    fp32 = tmp_path / "fp32.pt"
    self_train(model, labelled, pool, SelfTrainConfig(**common), log=None, checkpoint=fp32)
    assert "precision" not in load_checkpoint(fp32)["identity"]["config"]


def _cli(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr()


@pytest.mark.parametrize("argv", [
    ["distill", "--glyph-classes", "6", "--teacher-kwargs", '{"hidden": 8}', "--student-kwargs", '{"hidden": 4}',
     "--epochs", "1", "--batch-size", "16", "--no-baseline"],
    ["transfer", "run", "--dataset", "glyphs", "--hidden", "4", "--source-epochs", "1", "--epochs", "1",
     "--source-classes", "8", "--target-classes", "5", "--shots", "1", "--strategy", "full"],
    ["selftrain", "--glyph-classes", "6", "--backbone", "mlp", "--backbone-kwargs", '{"hidden": [16]}',
     "--rounds", "1", "--topk", "2", "--epochs", "1"],
    ["fewshot", "pretrain", "--glyph-classes", "40,8,8", "--backbone-kwargs", '{"hidden": 8}',
     "--budget-iterations", "3", "--validate-every", "3", "--validation-tasks", "3", "--test-tasks", "4",
     "--batch-size", "16"],
], ids=["distill", "transfer", "selftrain", "pretrain"])
def test_cli_precision_option(argv, tmp_path, capsys):
    js = tmp_path / "r.json"
    code, cap = _cli([*argv, "--precision", "bf16", "--no-progress", "--threads", "1", "--json", str(js)], capsys)
    assert code == 0, cap.err
    assert "bf16" in js.read_text()  # the run records how it trained
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--precision", "fp16"])
    assert exc.value.code == 2 and "argument --precision: invalid choice: 'fp16'" in capsys.readouterr().err


def test_pretrain_records_bf16_only_when_used(tmp_path, capsys):
    argv = ["fewshot", "pretrain", "--glyph-classes", "40,8,8", "--backbone-kwargs", '{"hidden": 8}',
            "--budget-iterations", "2", "--validate-every", "2", "--validation-tasks", "3", "--test-tasks", "4",
            "--batch-size", "16", "--no-progress", "--threads", "1"]
    code, cap = _cli([*argv, "--json", str(tmp_path / "f.json")], capsys)
    assert code == 0, cap.err
    assert "precision" not in json.loads((tmp_path / "f.json").read_text())
    code, cap = _cli([*argv, "--precision", "bf16", "--json", str(tmp_path / "b.json")], capsys)
    assert code == 0 and "forward passes in bfloat16 autocast" in cap.out
    assert json.loads((tmp_path / "b.json").read_text())["precision"] == "bf16"


def _domains():
    from mtl.adaptation import make_domain_split
    from mtl.data import make_glyphs

    data = make_glyphs(4, samples_per_class=12, image_size=16, seed=0)
    return make_domain_split(data, "mnistm", source_groups=range(1, 5), target_groups=range(5, 9),
                             test_groups=range(9, 13))


def test_adaptation_methods_train_in_bf16():
    """DANN's and ADDA's networks run in bfloat16 (the first conv's outputs), their losses in float32,
    and bf16 changes the training; the config refuses unknown precisions by name."""
    from mtl.adaptation import AdaptConfig, ADDAConfig, DANNConfig, train_adda, train_dann, train_source_only

    s, tiny = _domains(), {"hidden": 8, "num_blocks": 2}
    weights = {}
    for precision in ("fp32", "bf16"):
        cfg = DANNConfig(steps=6, batch_size=8, progress=False, precision=precision)
        res = train_dann("conv4", s.source_train, s.target_train.images, cfg, backbone_kwargs=tiny)
        weights[precision] = res.model.features[0].conv.weight.detach().clone()
        assert all(torch.isfinite(torch.tensor(r["domain_loss"])) for r in res.history)
    assert weights["bf16"].dtype == torch.float32 and not torch.equal(weights["bf16"], weights["fp32"])
    src = train_source_only("conv4", s.source_train, AdaptConfig(steps=4, batch_size=8, progress=False,
                                                                 precision="bf16"), backbone_kwargs=tiny).model
    seen = []
    src.features[0].conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    adapted = train_adda(src, s.source_train, s.target_train, ADDAConfig(steps=3, batch_size=8, progress=False,
                                                                         precision="bf16"))
    assert seen and set(seen) == {torch.bfloat16}  # the source encoder's passes ran under autocast
    assert not torch.equal(adapted.model.features[0].conv.weight, src.features[0].conv.weight)
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, got 'fp16'"):
        DANNConfig(precision="fp16").validate()


def test_adapt_cli_precision(tmp_path, capsys):
    argv = ["adapt", "--dataset", "glyphs", "--glyph-classes", "3", "--steps", "3", "--batch-size", "8",
            "--backbone-kwargs", '{"hidden": 8, "num_blocks": 2}', "--no-progress", "--threads", "1",
            "--methods", "dann,adda"]
    code, cap = _cli([*argv, "--precision", "bf16", "--json", str(tmp_path / "a.json")], capsys)
    assert code == 0, cap.err
    assert json.loads((tmp_path / "a.json").read_text())["config"]["precision"] == "bf16"
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--precision", "half"])
    assert exc.value.code == 2 and "invalid choice: 'half'" in capsys.readouterr().err
