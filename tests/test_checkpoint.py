"""Atomic, checksummed, safe checkpoints and the run utilities."""

import os
import pickle

import pytest
import torch

from mtl.errors import CheckpointError, ConfigError
from mtl.utils import (
    Budget,
    CSVLogger,
    check_new_output,
    load_checkpoint,
    prepare_out_dir,
    resolve_device,
    save_checkpoint,
)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_roundtrip(tmp_path):
    state = {"model": {"w": torch.arange(4.0)}, "iteration": 7, "config": {"algo": "maml"}}
    path = save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(path)
    assert back["iteration"] == 7 and back["config"] == {"algo": "maml"}
    assert torch.equal(back["model"]["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary files left


def test_truncated_and_corrupted_are_detected(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.randn(100)})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(path)
    flipped = bytearray(raw)
    flipped[-10] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    path.write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_failed_write_keeps_previous(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"v": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_outputs_are_never_overwritten(tmp_path):
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(ConfigError, match="already exists"):
        check_new_output(tmp_path / "r.json")
    check_new_output(tmp_path / "r.json", overwrite=True)
    run = tmp_path / "run"
    prepare_out_dir(run)
    (run / "metrics.csv").write_text("x\n")
    with pytest.raises(ConfigError, match="already holds results; pass --resume"):
        prepare_out_dir(run)
    assert prepare_out_dir(run, resume=True) == run


def test_budget_and_device():
    assert Budget(iterations=3).exhausted(3) and not Budget(iterations=3).exhausted(2)
    with pytest.raises(ConfigError, match="budget seconds must be > 0"):
        Budget(seconds=0)
    with pytest.raises(ConfigError, match="neither"):
        Budget()
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="device must be one of"):
        resolve_device("tpu")


def test_csv_logger_resumes(tmp_path):
    log = CSVLogger(tmp_path / "m.csv")
    for i in range(1, 5):
        log.log({"iteration": i, "loss": 1.0 / i})
    log.log({"iteration": 5, "loss": 0.1, "val_accuracy": 0.9})
    again = CSVLogger(tmp_path / "m.csv")
    assert again.column("iteration") == [1, 2, 3, 4, 5]
    again.truncate_after(3)
    assert CSVLogger(tmp_path / "m.csv").column("loss") == pytest.approx([1.0, 0.5, 1 / 3])


def test_cpu_clock_budget():
    budget = Budget(seconds=0.05, clock="cpu")
    while not budget.exhausted(0):
        sum(i * i for i in range(1000))  # burn CPU time
    assert budget.elapsed() >= 0.05
    with pytest.raises(ConfigError, match="budget clock must be one of wall, cpu"):
        Budget(seconds=1, clock="gpu")
