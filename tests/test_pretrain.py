"""Classifier pre-training of a few-shot embedding: outputs, determinism, --init hand-over, bad input."""

import json

import pytest
import torch

from meta.fewshot import FewShotConfig
from meta.pretrain import pretrain_classifier
from mtl.cli import main
from mtl.errors import ConfigError
from mtl.transfer.checkpoints import read_named_checkpoint
from mtl.utils import Budget

TINY = dict(dataset="glyphs", glyph_classes=(40, 8, 8), backbone_kwargs={"hidden": 8}, queries=3,
            validate_every=10, validation_tasks=6, test_tasks=10, augment_shift=1, augment_rotate=10.0)


def _run(out, steps=20):
    cfg = FewShotConfig(algo="protonet", **TINY)
    return pretrain_classifier(cfg, Budget(iterations=steps), out_dir=out, batch_size=32, progress=False,
                               log=lambda _m: None)


def test_pretrain_writes_the_best_trunk_and_is_deterministic(tmp_path):
    res = _run(tmp_path / "a")
    for name in ("backbone.pt", "metrics.csv", "learning_curve.png", "result.json"):
        assert (tmp_path / "a" / name).is_file()
    assert res["steps"] == 20 and res["best_step"] in (10, 20) and res["test_tasks"] == 10
    assert res["accuracy"] > 0.4  # 5-way nearest-prototype on unseen glyph classes; chance is 0.2
    rows = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2
    again = _run(tmp_path / "b")
    a = read_named_checkpoint(tmp_path / "a" / "backbone.pt").state_dict
    b = read_named_checkpoint(tmp_path / "b" / "backbone.pt").state_dict
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again["accuracy"] == res["accuracy"]
    assert not any(k.startswith("head.") for k in a)  # the classifier's head is not part of the trunk


def test_pretrained_trunk_starts_episodic_training(tmp_path, capsys):
    _run(tmp_path / "pre", steps=10)
    args = ["fewshot", "train", "--algo", "protonet", "--glyph-classes", "40,8,8", "--backbone-kwargs",
            '{"hidden": 8}', "--queries", "3", "--validation-tasks", "4", "--test-tasks", "6", "--no-progress",
            "--budget-iterations", "2", "--init", str(tmp_path / "pre" / "backbone.pt"), "--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert "restored" in capsys.readouterr().out


def test_pretrain_cli_and_bad_input(tmp_path, capsys):
    js = tmp_path / "r.json"
    code = main(["fewshot", "pretrain", "--glyph-classes", "40,8,8", "--backbone-kwargs", '{"hidden": 8}',
                 "--budget-iterations", "5", "--validate-every", "5", "--validation-tasks", "3", "--test-tasks", "4",
                 "--batch-size", "16", "--no-progress", "--out", str(tmp_path / "run"), "--json", str(js)])
    assert code == 0
    res = json.loads(js.read_text())
    assert res["algorithm"] == "pretrain" and res["steps"] == 5 and res["checkpoint"].endswith("backbone.pt")
    assert "nearest-prototype accuracy" in capsys.readouterr().out
    # an existing run folder is kept unless --overwrite
    assert main(["fewshot", "pretrain", "--glyph-classes", "40,8,8", "--budget-iterations", "1",
                 "--out", str(tmp_path / "run")]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert main(["fewshot", "pretrain", "--dataset", "sinusoid", "--budget-iterations", "1"]) == 2
    assert "needs an image dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse refuses it before anything runs
        main(["fewshot", "pretrain", "--lr", "0", "--budget-iterations", "1"])
    assert exc.value.code == 2 and "--lr" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="batch_size must be"):
        pretrain_classifier(FewShotConfig(**TINY), Budget(iterations=1), batch_size=0)
