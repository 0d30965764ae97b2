"""``mtlmeta adapt``: JSON output, run folder, and one-line errors for bad input."""

from __future__ import annotations

import json

from mtl.cli import main

FAST = ["adapt", "--dataset", "glyphs", "--glyph-classes", "3", "--steps", "3", "--batch-size", "8",
        "--backbone-kwargs", '{"hidden": 8, "num_blocks": 2}', "--no-progress", "--threads", "1"]


def test_adapt_writes_json_and_run_folder(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main([*FAST, "--methods", "dann,adda,target-supervised", "--json", str(out), "--out", str(tmp_path / "run")])
    assert code == 0
    result = json.loads(out.read_text())
    assert list(result["methods"]) == ["source-only", "dann", "adda", "target-supervised"]
    for row in result["methods"].values():
        assert 0 <= row["target_accuracy"] <= 1 and 0 <= row["a_distance"] <= 2 and "gap_recovered" in row
    assert result["a_distance_before"] == result["methods"]["source-only"]["a_distance"]
    assert result["data"]["shift"] == "mnistm" and result["data"]["classes"] == 3
    assert (tmp_path / "run" / "features.png").stat().st_size > 1000
    assert "dann" in (tmp_path / "run" / "metrics.csv").read_text()
    assert "d_A" in capsys.readouterr().out
    # Nothing is overwritten without --overwrite.
    assert main([*FAST, "--json", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_adapt_bad_input_exits_2(tmp_path, capsys):
    assert main([*FAST, "--dataset", "omniglot"]) == 2
    assert "--root" in capsys.readouterr().err
    assert main([*FAST, "--classes", "50"]) == 2
    assert "--classes 50" in capsys.readouterr().err
    assert main([*FAST, "--test-drawers", "1,2"]) == 2
    assert "disjoint" in capsys.readouterr().err
    assert main([*FAST, "--translate", "-1"]) == 2
    assert "translate" in capsys.readouterr().err


def test_adapt_budget_limits_each_method(tmp_path):
    out = tmp_path / "b.json"
    assert main([*FAST, "--steps", "5", "--budget-iterations", "2", "--methods", "dann", "--json", str(out)]) == 0
    methods = json.loads(out.read_text())["methods"]
    assert methods["source-only"]["steps"] == 2 and methods["dann"]["steps"] == 2
