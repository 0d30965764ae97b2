"""``mtlmeta affinity``: JSON and plot outputs, grouping, --compare, input validation."""

from __future__ import annotations

import json

import pytest

from mtl.cli import main

SMALL = ["--dataset", "correlated", "--correlations", "[[1, 0.9, 0], [0.9, 1, 0], [0, 0, 1]]",
         "--train-samples", "128", "--epochs", "1", "--no-progress", "--threads", "1", "--device", "cpu"]


def test_affinity_tag_json_plot_and_compare(tmp_path, capsys):
    js, png = tmp_path / "a.json", tmp_path / "a.png"
    assert main(["affinity", *SMALL, "--groups", "2", "--every", "2", "--compare", "--json", str(js),
                 "--plot", str(png)]) == 0
    res = json.loads(js.read_text())
    assert res["method"] == "tag" and res["affinity"]["task_names"] == ["t1", "t2", "t3"]
    assert len(res["affinity"]["matrix"]) == 3 and res["affinity"]["info"]["every"] == 2
    assert res["grouping"]["k"] == 2 and len(res["grouping"]["best"]["groups"]) == 2
    assert len(res["grouping"]["ranking"]) == 3  # S(3, 2) splits, best first
    scores = [g["score"] for g in res["grouping"]["ranking"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(res["compare"]["one_network"]["metrics"]) == ["t1", "t2", "t3"]
    assert png.stat().st_size > 1000
    assert "best split into 2 group(s)" in capsys.readouterr().out
    # existing outputs are never replaced without --overwrite
    assert main(["affinity", *SMALL, "--json", str(js)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_affinity_transfer_json(tmp_path):
    js = tmp_path / "t.json"
    assert main(["affinity", *SMALL, "--method", "transfer", "--target-samples", "20", "--val-samples", "20",
                 "--target-epochs", "2", "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    tr = res["transfer"]
    for s in range(3):
        for t in range(3):
            expected = (tr["scratch_loss"][t] - tr["transfer_loss"][s][t]) / tr["scratch_loss"][t]
            assert res["affinity"]["matrix"][s][t] == pytest.approx(expected)


@pytest.mark.parametrize("extra, message", [
    (["--groups", "4"], "--groups must be in 1..3"),
    (["--method", "transfer", "--every", "3"], "--every and --lookahead-lr"),
    (["--dataset", "glyphs", "--correlations", "[[1]]"], "--correlations applies"),
    (["--correlations", "[[1, 2], [2, 1]]"], "correlations"),
])
def test_affinity_cli_rejects_bad_input(extra, message, capsys):
    args = [a for a in SMALL if a not in ("--correlations", "[[1, 0.9, 0], [0.9, 1, 0], [0, 0, 1]]")] \
        if "--correlations" in extra else SMALL
    assert main(["affinity", *args, *extra]) == 2
    assert message in capsys.readouterr().err
