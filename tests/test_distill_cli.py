"""``mtlmeta distill`` end to end on tiny glyph problems (and real Omniglot when ../shared/data exists)."""

import json

import pytest

from mtl.cli import main

TINY = ["--glyph-classes", "6", "--teacher-kwargs", '{"hidden": 8}', "--epochs", "2", "--batch-size", "16",
        "--lr", "0.01", "--no-progress"]


def run(args, capsys):
    code = main(["distill", *args])
    return code, capsys.readouterr()


def test_kd_writes_json_csv_and_checkpoints(tmp_path, capsys):
    out, js = tmp_path / "run", tmp_path / "kd.json"
    code, cap = run([*TINY, "--student-kwargs", '{"hidden": 4}', "-T", "3", "--alpha", "0.2", "--out", str(out),
                     "--json", str(js)], capsys)
    assert code == 0, cap.err
    res = json.loads(js.read_text())
    assert res["command"] == "distill" and res["mode"] == "kd"
    assert res["temperature"] == 3.0 and res["alpha"] == 0.2
    assert res["data"] == {"dataset": "glyphs", "classes": 6, "test_per_class": 5, "train": 90, "test": 30}
    assert res["distilled"]["config"]["temperature"] == 3.0 and res["scratch"]["config"]["alpha"] == 1.0
    for key in ("scratch", "distilled"):
        assert 0 <= res[key]["accuracy"] <= 1 and 0 <= res[key]["agreement"] <= 1
    assert res["student"]["parameters"] < res["teacher"]["parameters"]
    assert {"metrics.csv", "teacher_1.pt", "scratch.pt", "student.pt"} <= {p.name for p in out.iterdir()}
    assert "distilled student (conv4, T=3, alpha=0.2)" in cap.out
    assert (out / "metrics.csv").read_text().splitlines()[0] == "model,accuracy,agreement"

    # outputs are never replaced without --overwrite
    before = js.read_text()
    code, cap = run([*TINY, "--json", str(js)], capsys)
    assert code == 2 and "already exists" in cap.err and js.read_text() == before
    code, cap = run([*TINY, "--out", str(out)], capsys)
    assert code == 2 and "already holds results" in cap.err


def test_a_saved_teacher_is_loaded_instead_of_trained(tmp_path, capsys):
    out, js = tmp_path / "run", tmp_path / "kd.json"
    code, cap = run([*TINY, "--no-baseline", "--out", str(out), "--json", str(js)], capsys)
    assert code == 0, cap.err
    res = json.loads(js.read_text())
    js2 = tmp_path / "again.json"
    code, cap = run([*TINY, "--teacher-checkpoint", str(out / "teacher_1.pt"), "--no-baseline", "--json", str(js2)],
                    capsys)
    assert code == 0, cap.err
    again = json.loads(js2.read_text())
    assert "scratch" not in again and "teacher 1/1" not in cap.out
    assert again["teacher"]["accuracy"] == pytest.approx(res["teacher"]["accuracy"])
    # ... but not for a dataset with other classes
    code, cap = run([*TINY[:1], "5", *TINY[2:], "--teacher-checkpoint", str(out / "teacher_1.pt")], capsys)
    assert code == 2 and "not this dataset's 5 classes" in cap.err


def test_an_ensemble_of_teachers(tmp_path, capsys):
    js = tmp_path / "ens.json"
    code, cap = run([*TINY, "--teachers", "2", "--combine", "probs", "--no-baseline", "--no-cache",
                     "--json", str(js)], capsys)
    assert code == 0, cap.err
    res = json.loads(js.read_text())
    assert len(res["teacher"]["members"]) == 2 and res["teacher"]["combine"] == "probs"
    assert res["teacher"]["ensemble_accuracy"] == res["teacher"]["accuracy"]
    assert res["distilled"]["config"]["cache_teacher"] is False
    assert "teacher 2/2" in cap.out


def test_born_again_generations(tmp_path, capsys):
    out, js = tmp_path / "ban", tmp_path / "ban.json"
    code, cap = run([*TINY, "--mode", "ban", "--generations", "2", "--alpha", "0", "-T", "1", "--out", str(out),
                     "--json", str(js)], capsys)
    assert code == 0, cap.err
    res = json.loads(js.read_text())
    assert res["mode"] == "ban" and [g["generation"] for g in res["generations"]] == [0, 1, 2]
    assert res["generations"][2]["ensemble_accuracy"] == res["ensemble_accuracy"]
    assert res["architecture"]["backbone_kwargs"]["hidden"] == 8
    assert {"generation_0.pt", "generation_1.pt", "generation_2.pt", "results.png", "metrics.csv"} <= {
        p.name for p in out.iterdir()}
    assert "generation 2: test accuracy" in cap.out and "ensemble of generations 1-2" in cap.out


@pytest.mark.parametrize("args, message", [
    (["-T", "0"], "temperature must be a finite number > 0 (e.g. 4), got 0.0"),
    (["--temperature", "-1"], "temperature must be a finite number > 0 (e.g. 4), got -1.0"),
    (["--alpha", "1.5"], "alpha (weight of the hard-label loss) must be in [0, 1], got 1.5"),
    (["--alpha", "-0.1"], "alpha (weight of the hard-label loss) must be in [0, 1], got -0.1"),
    (["--student-kwargs", '{"hidden": 4, "num_classes": 5}'],
     "--student-kwargs sets num_classes=5 but the dataset has 6 classes"),
    (["--mode", "ban", "--student", "mlp"], "--mode ban trains every generation with the teacher's architecture"),
    (["--dataset", "omniglot"], "--dataset omniglot needs --root DIR"),
    (["--test-per-class", "20"], "--test-per-class must be below 20, got 20"),
    (["--teacher", "convv4"], "unknown backbone 'convv4'; did you mean conv4"),
])
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    code, cap = run([*TINY, *args], capsys)
    assert code == 2
    assert message in cap.err and len(cap.err.strip().splitlines()) == 1


def test_real_omniglot_drawer_split(omniglot_original, tmp_path, capsys):
    js = tmp_path / "o.json"
    code, cap = run(["--dataset", "omniglot", "--root", str(omniglot_original), "--teacher-kwargs", '{"hidden": 4}',
                     "--student-kwargs", '{"hidden": 4}', "--budget-iterations", "2", "--no-baseline",
                     "--no-progress", "--json", str(js)], capsys)
    assert code == 0, cap.err
    res = json.loads(js.read_text())
    assert res["data"]["classes"] == 242 and res["data"]["train"] == 242 * 15 and res["data"]["test"] == 242 * 5
    assert res["distilled"]["steps"] == 2
