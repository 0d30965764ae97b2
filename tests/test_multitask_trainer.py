"""The multi-task trainer: learning, per-task metrics, logs and plots, exact resume, masked tasks, bad input."""

import pytest
import torch

from mtl.errors import CheckpointError, ConfigError
from mtl.multitask import MultiTaskConfig, MultiTaskData, MultiTaskTrainer, TaskSpec, build_model
from mtl.utils import Budget

TASKS = [TaskSpec("cls", 3), TaskSpec("reg", 1, "regression")]


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    cls = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return MultiTaskData(x, {"cls": cls, "reg": (x[:, 2] - x[:, 3]).unsqueeze(1)})


def _trainer(out=None, arch="hard", weighting="equal", data=None, tasks=TASKS, **cfg):
    torch.manual_seed(0)
    model = build_model(arch, tasks, "mlp", {"in_features": 4, "hidden": (16,)})
    config = MultiTaskConfig(**{"epochs": 3, "batch_size": 16, "lr": 1e-2, "progress": False, **cfg})
    return MultiTaskTrainer(model, tasks, data or _data(), _data(48, seed=1), weighting, config, out)


def test_training_learns_both_tasks_and_writes_logs(tmp_path):
    trainer = _trainer(tmp_path, weighting="uncertainty", epochs=4, log_every=3)
    before = trainer.evaluate(_data(48, seed=1))
    summary = trainer.fit()
    after = trainer.evaluate(_data(48, seed=1))
    assert after["cls"]["accuracy"] > before["cls"]["accuracy"]
    assert after["reg"]["mse"] < 0.5 * before["reg"]["mse"]
    assert summary["epochs"] == 4 and summary["steps"] == 24 and summary["best_epoch"] is not None
    for name in ("last.pt", "best.pt", "metrics.csv", "curves.png"):
        assert (tmp_path / name).is_file()
    cols = trainer.log.columns
    for col in ("train_loss_cls", "train_loss_reg", "weight_cls", "weight_reg", "val_cls_accuracy", "val_reg_mse"):
        assert col in cols
    assert len(trainer.log.rows) == 4 + 8  # 4 epoch rows, a row every 3 steps
    weights = trainer.log.column("weight_reg")
    assert weights[0] != weights[-1]  # uncertainty weights change over time, and the log shows it


def test_fresh_run_into_an_old_run_folder_starts_a_new_log(tmp_path):
    _trainer(tmp_path, epochs=3, log_every=3).fit()
    again = _trainer(tmp_path, epochs=2, log_every=3)
    again.fit()
    steps = again.log.column("step")
    assert steps == sorted(steps) and max(steps) == 12  # only this run's rows, in order
    assert len(again.log.rows) == 2 + 4


def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path):
    full = _trainer(tmp_path / "full", weighting="dwa", arch="mmoe")
    full.fit()
    part = _trainer(tmp_path / "part", weighting="dwa", arch="mmoe")
    summary = part.fit(Budget(iterations=10))  # stops inside epoch 2
    assert summary["stopped_by_budget"] and part.position == 4
    again = _trainer(tmp_path / "part", weighting="dwa", arch="mmoe")
    again.resume(tmp_path / "part" / "last.pt")
    assert again.step == 10
    again.fit()
    for p, q in zip(full.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6)
    assert full.weighting.current_weights() == pytest.approx(again.weighting.current_weights())
    assert again.log.column("step") == full.log.column("step")


def test_resume_refuses_another_configuration_and_corruption(tmp_path):
    _trainer(tmp_path, epochs=1).fit()
    other = _trainer(tmp_path, lr=5e-3)
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.01 vs now 0.005"):
        other.resume(tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="weighting"):
        _trainer(tmp_path, weighting="pcgrad").resume(tmp_path / "last.pt")
    raw = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(raw[:-10])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        _trainer(tmp_path).resume(tmp_path / "last.pt")


def test_a_task_without_labels_leaves_its_head_untouched():
    data = _data()
    data = MultiTaskData(data.inputs, data.targets, {"reg": torch.zeros(len(data), dtype=torch.bool)})
    trainer = _trainer(data=data)
    head = [p.detach().clone() for p in trainer.model.heads["reg"].parameters()]
    trainer.fit()
    for before, after in zip(head, trainer.model.heads["reg"].parameters()):
        assert torch.equal(before, after)
    assert "train_loss_reg" not in trainer.log.columns if trainer.log else True


def test_partially_labelled_task_counts_only_its_labels():
    data = _data()
    labels = data.targets["cls"].clone()
    labels[::2] = -1
    trainer = _trainer(data=MultiTaskData(data.inputs, {"cls": labels, "reg": data.targets["reg"]}), epochs=1)
    trainer.fit()
    result = trainer.evaluate(MultiTaskData(data.inputs, {"cls": labels, "reg": data.targets["reg"]}))
    assert result["cls"]["labelled"] == len(data) // 2 and result["reg"]["labelled"] == len(data)


def test_bad_input_is_refused_with_one_clear_line():
    model = build_model("hard", TASKS, "mlp", {"in_features": 4, "hidden": (8,)})
    renamed = [TaskSpec("cls", 3), TaskSpec("value", 1, "regression")]
    with pytest.raises(ConfigError, match=r"task names of the model's heads do not match .* unknown \['reg'\]"):
        MultiTaskTrainer(model, renamed, _data())
    bigger = [TaskSpec("cls", 5), TaskSpec("reg", 1, "regression")]
    with pytest.raises(ConfigError, match="head of task 'cls' has 3 outputs but its TaskSpec declares 5"):
        MultiTaskTrainer(model, bigger, _data())
    small = build_model("hard", [TaskSpec("cls", 2), TaskSpec("reg", 1, "regression")], "mlp", {"in_features": 4})
    with pytest.raises(ConfigError, match="labels go up to 2 but its head has 2 outputs"):
        MultiTaskTrainer(small, [TaskSpec("cls", 2), TaskSpec("reg", 1, "regression")], _data())
    data = _data()
    with pytest.raises(ConfigError, match=r"validation data"):
        MultiTaskTrainer(model, TASKS, data, MultiTaskData(data.inputs, {"cls": data.targets["cls"]}))
    with pytest.raises(ConfigError, match="unknown weighting"):
        MultiTaskTrainer(model, TASKS, data, weighting="softmax")
    with pytest.raises(ConfigError, match="select_by"):
        MultiTaskConfig(select_by="best")


def test_non_finite_loss_stops_before_the_update():
    data = _data()
    bad = data.targets["reg"].clone()
    bad[3] = float("inf")
    trainer = _trainer(data=MultiTaskData(data.inputs, {"cls": data.targets["cls"], "reg": bad}))
    with pytest.raises(ConfigError, match="loss of task 'reg' became inf"):
        trainer.fit()
