"""``mtlmeta selftrain`` end to end (glyphs; real Omniglot and its 28x28 sheets when ../shared/data exists)."""

import json

import pytest
import torch

from meta.selftrain import SelfTrainConfig, make_pool, self_train, split_labelled_unlabelled
from mtl.cli import main
from mtl.data import UnlabelledImages, load_omniglot, load_omniglot_sprites
from mtl.errors import ConfigError

TINY = ["--glyph-classes", "6", "--labelled-per-class", "3", "--backbone-kwargs", '{"hidden": 8}',
        "--epochs", "3", "--batch-size", "16", "--lr", "0.01", "--no-progress"]


def run(args, capsys):
    code = main(["selftrain", *args])
    return code, capsys.readouterr()


def test_rounds_write_json_csv_plot_and_checkpoint(tmp_path, capsys):
    out, js = tmp_path / "run", tmp_path / "r.json"
    code, cap = run([*TINY, "--rounds", "2", "--topk", "2", "--out", str(out), "--json", str(js)], capsys)
    assert code == 0, cap.err
    res = json.loads(js.read_text())
    assert res["command"] == "selftrain" and res["method"] == "rounds"
    assert res["data"]["labelled"] == 18 and res["data"]["pool"] == 6 * 12 and res["data"]["test"] == 30
    assert [r["round"] for r in res["rounds"]] == [0, 1, 2]
    for r in res["rounds"][1:]:
        assert 0 < r["added"] <= 2 * 6 and 0 <= r["precision_added"] <= 1 and 0 <= r["accuracy"] <= 1
    assert res["config"]["k_per_class"] == 2 and res["config"]["threshold"] is None
    assert {"metrics.csv", "curves.png", "model.pt"} <= {p.name for p in out.iterdir()}
    assert "round 2:" in cap.out and "supervised-only" in cap.out

    # outputs are never replaced without --overwrite
    before = js.read_text()
    code, cap = run([*TINY, "--rounds", "1", "--json", str(js)], capsys)
    assert code == 2 and "already exists" in cap.err and js.read_text() == before
    code, cap = run([*TINY, "--rounds", "1", "--out", str(out)], capsys)
    assert code == 2 and "already holds results" in cap.err
    code, cap = run([*TINY, "--rounds", "1", "--topk", "1", "--out", str(out), "--json", str(js), "--overwrite"],
                    capsys)
    assert code == 0, cap.err
    assert len(json.loads(js.read_text())["rounds"]) == 2


def test_online_method(tmp_path, capsys):
    js = tmp_path / "o.json"
    code, cap = run([*TINY, "--method", "online", "--epochs", "2", "--threshold", "0.3", "--ramp", "0,1",
                     "--unlabelled-batch-size", "32", "--json", str(js)], capsys)
    assert code == 0, cap.err
    res = json.loads(js.read_text())
    assert res["method"] == "online" and [r["alpha"] for r in res["rounds"]] == [0.0, 0.0, 3.0]


@pytest.mark.parametrize("args, message", [
    (["--threshold", "0"], "--threshold must be a probability in (0, 1], got 0.0"),
    (["--threshold", "1.5"], "--threshold must be a probability in (0, 1], got 1.5"),
    (["--topk", "0"], "--topk must be an integer >= 1 (pseudo-labels per class), got 0"),
    (["--ema-decay", "1"], "ema_decay must be in (0, 1)"),
    (["--dataset", "omniglot"], "--dataset omniglot needs --root DIR"),
    (["--pool", "sheets"], "--pool sheets needs --sheets-root DIR"),
    (["--labelled-per-class", "17"], "--test-per-class 5 plus --labelled-per-class 17 must leave at least one"),
    (["--method", "online", "--ramp", "1,2,3"], "--ramp takes two epochs START,END, got 1,2,3"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    code, cap = run([*TINY, *args], capsys)
    assert code == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], cap.err


def test_omniglot_sheets_as_a_pool_for_real_omniglot(omniglot_original, omniglot28):
    """The unlabelled 28x28 sheets mix with the labelled originals loaded with bilinear resizing."""
    sheets = load_omniglot_sprites(omniglot28, "background")
    assert sheets.shape[1:] == (1, 28, 28)
    data = load_omniglot(omniglot_original, subsets=("background_small1",), resample="bilinear")
    data = data.with_classes(range(5))
    labelled, rest = split_labelled_unlabelled(data, 2, seed=0)
    pool = make_pool([rest, UnlabelledImages(sheets[:300])])
    assert len(pool) == len(rest) + 300 and int((pool.targets < 0).sum()) == 300
    res = self_train("conv4", labelled, pool, SelfTrainConfig(rounds=1, threshold=None, k_per_class=4, epochs=3),
                     backbone_kwargs={"hidden": 8}, log=None)
    sel = res.selections[0]
    known = pool.targets[sel] >= 0
    stats = res.rounds[1]
    assert stats.added == len(sel) <= 20
    if known.any():  # precision counts only the examples with a known class
        expect = float((res.pseudo_labels[0][known] == pool.targets[sel][known]).float().mean())
        assert stats.precision_added == pytest.approx(expect)
    else:
        assert stats.precision_added is None
    # a labelled set at another size is refused with both shapes named
    big = data.select(torch.arange(4))
    big.images = torch.nn.functional.interpolate(big.images, size=105)
    with pytest.raises(ConfigError, match="labelled images are 1x105x105 but unlabelled images are 1x28x28"):
        self_train("conv4", big, UnlabelledImages(sheets[:10]), SelfTrainConfig(epochs=1), log=None)


def test_benchmark_skips_without_data(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "selftrain_omniglot.py"
    done = subprocess.run([sys.executable, str(script), "--root", str(tmp_path / "absent"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("skipped: Omniglot small background subsets not found in")
    assert not list(tmp_path.iterdir())
