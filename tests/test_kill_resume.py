"""Kill -9 and resume: a CLI run killed at a random point after its first checkpoint, then resumed with
``--resume``, ends with exactly the metrics and parameters of an uninterrupted run (CPU, same seed).
Also: a truncated, corrupted or unsafe checkpoint is refused with a clear error and the previous good
one is kept."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mtl.cli import main
from mtl.utils import load_checkpoint, save_checkpoint
from mtl.utils.checkpoint import previous_path

FEWSHOT = ["fewshot", "train", "--algo", "maml", "--glyph-classes", "12,6,6", "--backbone-kwargs", '{"hidden": 8}',
           "--queries", "3", "--meta-batch", "2", "--validation-tasks", "4", "--test-tasks", "6",
           "--budget-iterations", "20", "--validate-every", "4", "--checkpoint-every", "2"]
MULTITASK = ["multitask", "--dataset", "synthetic", "--train-samples", "256", "--batch-size", "16", "--epochs", "25",
             "--weighting", "dwa"]
SELFTRAIN = ["selftrain", "--glyph-classes", "6", "--backbone", "mlp", "--backbone-kwargs", '{"hidden": [16]}',
             "--labelled-per-class", "2", "--rounds", "6", "--topk", "2", "--epochs", "4", "--shift", "1",
             "--student", "continue", "--ema-decay", "0.9"]
COMMON = ["--seed", "3", "--threads", "1", "--no-progress", "--device", "cpu"]
TIMING = {"train_seconds", "train_cpu_seconds_this_process", "tasks_per_second", "eval_seconds", "seconds",
          "checkpoint"}


def _strip(value):
    """The result without wall-clock timings and paths (which differ between any two runs)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)
    for key in ("algo", "model", "state_dict", "student"):
        if key in state:
            return state[key]
    raise AssertionError(f"no weights in {path}")


def _start_and_kill(argv: list[str], checkpoint: Path, seed: int) -> int:
    """Start ``mtlmeta argv`` in a subprocess, SIGKILL it at a random moment after ``checkpoint`` appears."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mtl.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 180
    try:
        while not checkpoint.is_file():
            if proc.poll() is not None:
                raise AssertionError(f"the run ended (code {proc.returncode}) before its first checkpoint: "
                                     f"{proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("no checkpoint after 180 s")
            time.sleep(0.02)
        time.sleep(random.Random(seed).uniform(0.0, 0.3))  # somewhere after the first checkpoint
        proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.parametrize(
    "name, argv, final, last",
    [("fewshot", FEWSHOT, "last.pt", "last.pt"), ("multitask", MULTITASK, "last.pt", "last.pt"),
     ("selftrain", SELFTRAIN, "model.pt", "last.pt")],
)
def test_killed_run_resumes_to_the_same_result(tmp_path, name, argv, final, last):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*argv, *COMMON, "--out", str(full), "--json", str(tmp_path / "full.json")]) == 0
    code = _start_and_kill([*argv, *COMMON, "--out", str(part)], part / last, seed=len(name))
    interrupted = not (part / final).is_file() if final != last else code == -signal.SIGKILL
    load_checkpoint(part / last)  # what the killed run left is an intact checkpoint
    assert main([*argv, *COMMON, "--out", str(part), "--resume", "--json", str(tmp_path / "part.json")]) == 0
    a = json.loads((tmp_path / "full.json").read_text())
    b = json.loads((tmp_path / "part.json").read_text())
    assert _strip(a) == _strip(b)
    wa, wb = _weights(full / final), _weights(part / final)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bit-exact
    assert interrupted or code == -signal.SIGKILL


def _finished_fewshot_run(out: Path) -> None:
    argv = [*FEWSHOT[:FEWSHOT.index("--budget-iterations")], "--budget-iterations", "4", "--validate-every", "2",
            "--checkpoint-every", "2", *COMMON, "--out", str(out)]
    assert main(argv) == 0


def _resume(out: Path, capsys) -> tuple[int, str]:
    argv = [*FEWSHOT[:FEWSHOT.index("--budget-iterations")], "--budget-iterations", "6", "--validate-every", "2",
            "--checkpoint-every", "2", *COMMON, "--out", str(out), "--resume"]
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_damaged_checkpoint_is_refused_and_the_previous_one_kept(tmp_path, capsys, damage):
    out = tmp_path / "run"
    _finished_fewshot_run(out)
    prev = previous_path(out / "last.pt")
    assert prev.is_file()  # last.pt replaced an intact checkpoint: that one was kept
    good_prev = prev.read_bytes()
    raw = bytearray((out / "last.pt").read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 3]
    elif damage == "flip":
        raw[-100] ^= 0x55
    else:
        raw = bytearray()
    (out / "last.pt").write_bytes(bytes(raw))
    code, err = _resume(out, capsys)
    assert code == 2
    assert "truncated or corrupted" in err or "is empty" in err
    assert "last.prev.pt" in err and err.count("\n") == 1  # one clear line naming the good checkpoint
    assert prev.read_bytes() == good_prev and (out / "last.pt").read_bytes() == bytes(raw)


def test_resume_continues_from_the_previous_checkpoint_when_told(tmp_path, capsys):
    from meta.fewshot import FewShotConfig, TaskSources, build_algorithm
    from meta.trainer import MetaTrainer, MetaTrainerConfig

    out = tmp_path / "run"
    _finished_fewshot_run(out)
    state = load_checkpoint(previous_path(out / "last.pt"))
    (out / "last.pt").write_bytes(b"garbage")
    record = state["config"]["extra"]["fewshot"]
    cfg = FewShotConfig(**{k: (tuple(v) if k == "glyph_classes" else v) for k, v in record.items()
                           if k in FewShotConfig.__dataclass_fields__})
    tasks = TaskSources(cfg, torch.device("cpu"))
    trainer = MetaTrainer(build_algorithm(cfg, tasks.image_shape), tasks.train, tasks.val,
                          MetaTrainerConfig(**state["config"], progress=False))
    trainer.resume(out / "last.pt", fallback=True)
    assert trainer.iteration == state["iteration"] > 0
    assert "using the previous good checkpoint" in capsys.readouterr().out


class _Evil:
    def __reduce__(self):
        return (print, ("PWNED",))


def test_checkpoint_with_a_pickled_object_is_refused_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    _finished_fewshot_run(out)
    capsys.readouterr()
    torch.save({"format": "mtlmeta-meta-trainer-1", "payload": _Evil()}, out / "last.pt")
    code, err = _resume(out, capsys)
    assert code == 2 and "refused" in err and "pickled objects" in err


def test_atomic_save_keeps_only_intact_previous(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"v": 1}, keep_previous=True)
    assert not previous_path(path).exists()
    save_checkpoint(path, {"v": 2}, keep_previous=True)
    assert load_checkpoint(previous_path(path))["v"] == 1 and load_checkpoint(path)["v"] == 2
    path.write_bytes(path.read_bytes()[:-5])  # damaged: must not push out the good previous one
    save_checkpoint(path, {"v": 3}, keep_previous=True)
    assert load_checkpoint(previous_path(path))["v"] == 1 and load_checkpoint(path)["v"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]
