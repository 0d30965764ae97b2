"""``mtlmeta transfer run | advise | inspect``: JSON output and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from mtl.cli import main

FAST = ["--dataset", "glyphs", "--hidden", "4", "--source-epochs", "1", "--epochs", "2", "--no-progress",
        "--threads", "1", "--source-classes", "8", "--target-classes", "5"]


def test_run_saves_source_then_restores_it_by_pattern(tmp_path, capsys):
    src, first = tmp_path / "src.pt", tmp_path / "a.json"
    assert main(["transfer", "run", *FAST, "--shots", "1", "--strategy", "linear_probe", "--save-source", str(src),
                 "--json", str(first)]) == 0
    result = json.loads(first.read_text())
    assert result["strategy"] == "linear_probe" and result["fine_tune"]["cached_features"] is True
    assert 0 <= result["distance"]["value"] <= 2 and result["advice"]["per_class"] == 1.0
    assert result["problem"]["target_train"] == 5 and result["source_model"]["saved_to"] == str(src)
    second = tmp_path / "b.json"
    assert main(["transfer", "run", *FAST, "--init", str(src), "--restore", r"^features\.block[12]\.",
                 "--strategy", "partial:block3", "--distance", "1.5", "--json", str(second)]) == 0
    result = json.loads(second.read_text())
    matched = result["source_model"]["restore"]["matched"]
    assert matched and {n.split(".")[1] for n in matched} == {"block1", "block2"}
    assert result["distance"]["value"] == 1.5 and result["distance"]["source"] == "given"
    assert result["advice"]["strategy"] == "full"  # 5 per class is 'much data'


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    src = tmp_path / "src.pt"
    assert main(["transfer", "run", *FAST, "--shots", "1", "--strategy", "full", "--save-source", str(src)]) == 0
    capsys.readouterr()
    assert main(["transfer", "run", *FAST, "--init", str(src), "--restore", "hidden[123]"]) == 2
    assert "matches no tensor name" in capsys.readouterr().err
    assert main(["transfer", "run", *FAST, "--init", str(src), "--restore", ".*", "--hidden", "8"]) == 2
    assert "shape mismatch for features.block1.conv.weight" in capsys.readouterr().err
    assert main(["transfer", "run", *FAST, "--init", str(src), "--backbone", "mlp"]) == 2
    err = capsys.readouterr().err
    assert "'conv4' backbone" in err and "pass --backbone conv4" in err and "check_backbone" not in err
    assert main(["transfer", "inspect", str(src), "--pattern", "nothing"]) == 2
    assert "matches no tensor" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["transfer", "run", "--strategy", "everything"])


def test_advise_and_inspect_write_json(tmp_path, capsys):
    out = tmp_path / "advice.json"
    assert main(["transfer", "advise", "--per-class", "1", "--distance", "1.6", "--rule", "four_regimes",
                 "--json", str(out)]) == 0
    advice = json.loads(out.read_text())
    assert advice["strategy"] == "partial:features.block3" and "little data" in advice["regime"]
    assert advice["rule"] == "four_regimes" and advice["thresholds"]["different_above"] == 1.0
    assert main(["transfer", "advise", "--per-class", "1", "--distance", "1.6", "--rule", "four_regimes",
                 "--different-above", "1.7", "--json", str(tmp_path / "override.json")]) == 0
    assert json.loads((tmp_path / "override.json").read_text())["strategy"] == "linear_probe"
    assert main(["transfer", "advise", "--per-class", "1", "--distance", "0.5", "--different-above", "2.5"]) == 2
    assert "different_above" in capsys.readouterr().err
    assert main(["transfer", "advise", "--per-class", "1", "--distance", "1.6", "--json", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    src = tmp_path / "src.safetensors"
    assert main(["transfer", "run", *FAST, "--shots", "1", "--strategy", "full", "--save-source", str(src)]) == 0
    listing = tmp_path / "inspect.json"
    assert main(["transfer", "inspect", str(src), "--pattern", "head", "--json", str(listing)]) == 0
    data = json.loads(listing.read_text())
    assert set(data["tensors"]) == {"head.weight", "head.bias"} and data["metadata"]["backbone"] == "conv4"
