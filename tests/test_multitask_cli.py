"""``mtlmeta multitask``: JSON with per-task metrics and Delta-m, resume, and bad input (exit code 2)."""

import json

import pytest

from mtl.cli import main

FAST = ["--dataset", "synthetic", "--train-samples", "256", "--epochs", "2", "--no-progress",
        "--backbone-kwargs", '{"hidden": [8]}']


def test_train_baseline_gives_delta_m(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["multitask", *FAST, "--arch", "mmoe", "--experts", "2", "--weighting", "uncertainty",
                 "--train-baseline", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["arch"] == "mmoe" and result["weighting"] == "uncertainty"
    assert set(result["metrics"]) == {"y1", "y2"} and set(result["test"]["y1"]) == {"mse", "loss", "labelled"}
    base = result["baseline"]["metrics"]
    want = 50 * sum((base[t] - result["metrics"][t]) / base[t] for t in ("y1", "y2"))
    assert result["delta_m"] == pytest.approx(want)
    assert "Delta-m vs single-task" in capsys.readouterr().out


def test_baseline_json_from_a_single_run(tmp_path):
    single = tmp_path / "single.json"
    assert main(["multitask", *FAST, "--arch", "single", "--json", str(single)]) == 0
    assert json.loads(single.read_text())["delta_m"] == 0.0
    soft = tmp_path / "soft.json"
    assert main(["multitask", *FAST, "--arch", "soft", "--lambda", "0.1", "--tie", "pairwise",
                 "--baseline-json", str(single), "--json", str(soft)]) == 0
    result = json.loads(soft.read_text())
    assert result["baseline"]["source"] == str(single) and isinstance(result["delta_m"], float)
    assert result["arch_options"]["strength"] == 0.1


def test_out_folder_and_resume(tmp_path):
    run = tmp_path / "run"
    assert main(["multitask", *FAST, "--out", str(run), "--budget-iterations", "3"]) == 0
    assert (run / "last.pt").is_file()  # stopped inside the first epoch
    assert main(["multitask", *FAST, "--out", str(run)]) == 2  # never written over silently
    assert main(["multitask", *FAST, "--out", str(run), "--resume", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["training"]["steps"] == 8 and result["training"]["epochs"] == 2
    assert main(["multitask", *FAST, "--out", str(run), "--resume", "--lr", "0.01"]) == 2  # other settings


@pytest.mark.parametrize("args, message", [
    (["--arch", "soft", "--lambda", "-1"], "soft sharing lambda must be a finite number >= 0, got -1.0"),
    (["--arch", "hard", "--lambda", "0.1"], "--lambda applies to --arch soft only"),
    (["--weighting", "fixed"], "--weighting fixed needs --task-weights"),
    (["--weighting", "fixed", "--task-weights", '{"y1": 1, "z": 2}'], r"missing ['y2'], unknown ['z']"),
    (["--arch", "soft", "--tied-layers", "nothing"], "match no parameter"),
    (["--correlation", "2"], "correlation must be a number in [-1, 1], got 2.0"),
    (["--label-fraction", "0"], "--label-fraction must be in (0, 1]"),
    (["--dataset", "omniglot"], "needs --root"),
    (["--resume"], "--resume needs --out"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    base = [a for a in FAST]
    if "--dataset" in args:
        base = ["--no-progress"]
    assert main(["multitask", *base, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unknown_weighting_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["multitask", *FAST, "--weighting", "softmax"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'softmax'" in err and "pcgrad" in err and err.count("\n") == 1


def test_existing_json_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("{}")
    assert main(["multitask", *FAST, "--json", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "{}"
    assert main(["multitask", *FAST, "--json", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["command"] == "multitask"
