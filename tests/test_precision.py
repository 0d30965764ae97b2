"""bfloat16 mixed precision (mtl.utils.precision) in meta-training: what changes and what does not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fewshot_helpers import make_tasks, tiny_conv

from meta import MAML, ProtoNet
from meta.fewshot import FewShotConfig, run_fewshot
from meta.trainer import MetaTrainerConfig
from mtl import create_backbone
from mtl.cli import main
from mtl.errors import CheckpointError, ConfigError
from mtl.utils import Budget, load_checkpoint
from mtl.utils.precision import autocast, autocast_state, check_precision, restore_autocast


def _stroke_tasks(tasks=2, ways=5, queries=3, size=28):
    g = torch.Generator().manual_seed(0)
    sx = (torch.rand(tasks, ways, 1, size, size, generator=g) > 0.8).float()  # sparse strokes, like Omniglot
    qx = (torch.rand(tasks, ways * queries, 1, size, size, generator=g) > 0.8).float()
    sy = torch.arange(ways).expand(tasks, -1).contiguous()
    qy = torch.arange(ways).repeat_interleave(queries).expand(tasks, -1).contiguous()
    return sx, sy, qx, qy


def _meta_grads(precision, workers=1, tasks=2):
    torch.manual_seed(0)
    model = create_backbone("conv4", in_channels=1, image_size=28, hidden=32, num_classes=5, track_running_stats=False)
    algo = MAML(model, inner_lr=0.4)
    with autocast("cpu", precision):
        algo.outer_backward(*_stroke_tasks(tasks), workers=workers)
    # a conv bias followed by BatchNorm has no gradient: in either precision it is rounding noise
    return torch.cat([p.grad.flatten() for n, p in algo.named_parameters() if not n.endswith("conv.bias")])


def test_bf16_second_order_meta_gradient_is_close_to_fp32():
    """At a conv4 of 32 filters on 28x28 strokes the cosine is 0.97 (measured; 0.995 at trained
    Omniglot checkpoints, where two meta-batches' fp32 gradients have cosines of -0.1 to 0.5)."""
    full, half = _meta_grads("fp32"), _meta_grads("bf16")
    assert not torch.equal(full, half)  # autocast did change the computation
    cosine = F.cosine_similarity(full, half, dim=0)
    assert cosine > 0.9, float(cosine)


def test_task_workers_compute_in_the_callers_precision():
    """Autocast is per thread: the workers take the caller's, so 2 workers give the 1-worker bf16
    gradients (in float32 they would differ from them by about the bf16 rounding). One intra-op
    thread throughout: bf16 results depend on how a kernel splits its work between threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one, two = _meta_grads("bf16", workers=1, tasks=3), _meta_grads("bf16", workers=2, tasks=3)
        fp32 = _meta_grads("fp32", workers=2, tasks=3)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-6)
    assert float((fp32 - one).norm() / one.norm()) > 1e-2  # what float32 workers would have given


def test_autocast_state_round_trip_on_another_thread():
    import threading

    seen = {}
    with autocast("cpu", "bf16"):
        state = autocast_state("cpu")

    def worker():
        seen["before"] = torch.is_autocast_enabled("cpu")
        with restore_autocast("cpu", state):
            seen["inside"] = (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
            seen["dtype"] = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"before": False, "inside": (True, torch.bfloat16), "dtype": torch.bfloat16}
    assert state == (True, torch.bfloat16) and autocast_state("cpu")[0] is False


@pytest.mark.parametrize("bad", ["fp16", "bfloat16", None, 16])
def test_bad_precision_is_refused_by_name(bad):
    for make in (lambda: check_precision(bad), lambda: MetaTrainerConfig(precision=bad),
                 lambda: FewShotConfig(precision=bad)):
        with pytest.raises(ConfigError, match=f"precision must be one of fp32, bf16, got {bad!r}"):
            make()


TINY = dict(glyph_classes=(12, 6, 6), backbone_kwargs={"hidden": 8}, queries=3, validation_tasks=4,
            test_tasks=6, validate_every=4, checkpoint_every=4)


def test_bf16_run_trains_records_and_resumes_only_in_bf16(tmp_path, capsys):
    cfg = FewShotConfig(algo="protonet", precision="bf16", **TINY)
    quiet = dict(progress=False, log=lambda s: None)
    res = run_fewshot(cfg, Budget(iterations=8), out_dir=tmp_path / "a", **quiet)
    ref = run_fewshot(FewShotConfig(algo="protonet", **TINY), Budget(iterations=8), out_dir=tmp_path / "f", **quiet)
    assert res["precision"] == "bf16" and ref["precision"] == "fp32"
    state, fp32 = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "f" / "last.pt")
    assert state["config"]["precision"] == "bf16"
    assert "precision" not in state["config"]["extra"]["fewshot"]  # recorded once, by the trainer
    w = "model.features.block1.conv.weight"
    assert state["algo"][w].dtype == torch.float32  # the weights stay float32
    assert not torch.equal(state["algo"][w], fp32["algo"][w])
    # resuming: the same precision continues; the other one is refused by name, nothing overwritten
    before = (tmp_path / "a" / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match="precision: checkpoint 'bf16' vs now 'fp32'"):
        run_fewshot(FewShotConfig(algo="protonet", **TINY), Budget(iterations=12), out_dir=tmp_path / "a",
                    resume=True, **quiet)
    assert (tmp_path / "a" / "last.pt").read_bytes() == before
    again = run_fewshot(cfg, Budget(iterations=12), out_dir=tmp_path / "a", resume=True, **quiet)
    assert again["meta_iterations"] == 12


def test_cli_precision_option(tmp_path, capsys):
    code = main(["fewshot", "train", "--algo", "fomaml", "--precision", "bf16", "--budget-iterations", "2",
                 "--meta-batch", "2", "--glyph-classes", "12,6,6", "--backbone-kwargs", '{"hidden": 8}',
                 "--queries", "3", "--validation-tasks", "4", "--test-tasks", "4", "--no-progress",
                 "--out", str(tmp_path / "r")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "meta-updates in bfloat16 autocast, validation and test in float32" in out.out
    with pytest.raises(SystemExit):
        main(["fewshot", "train", "--precision", "fp16", "--out", str(tmp_path / "x")])
    assert "argument --precision: invalid choice: 'fp16'" in capsys.readouterr().err


def test_protonet_bf16_loss_close_to_fp32():
    torch.manual_seed(0)
    algo = ProtoNet(tiny_conv(dtype=torch.float32, classes=None))
    tasks = make_tasks((1, 16, 16), tasks=2, dtype=torch.float32)
    with torch.no_grad():
        full, _ = algo.outer_loss(*tasks)
        with autocast("cpu", "bf16"):
            half, _ = algo.outer_loss(*tasks)
    assert float(half) != float(full) and float(half) == pytest.approx(float(full), rel=0.05)


def test_multitask_bf16_learns_and_resumes_only_in_bf16(tmp_path):
    from mtl.multitask import MultiTaskConfig, MultiTaskData, MultiTaskTrainer, TaskSpec, build_model

    tasks = [TaskSpec("cls", 3), TaskSpec("reg", 1, "regression")]

    def data(n, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 4, generator=g)
        return MultiTaskData(x, {"cls": (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long(),
                                 "reg": (x[:, 2] - x[:, 3]).unsqueeze(1)})

    def trainer(out, precision, epochs=4):
        torch.manual_seed(0)
        model = build_model("hard", tasks, "mlp", {"in_features": 4, "hidden": (16,)})
        cfg = MultiTaskConfig(epochs=epochs, batch_size=16, lr=1e-2, progress=False, precision=precision)
        return MultiTaskTrainer(model, tasks, data(96, 0), data(48, 1), "equal", cfg, out)

    half, full = trainer(tmp_path / "b", "bf16"), trainer(tmp_path / "f", "fp32")
    before = half.evaluate(data(48, 1))
    half.fit()
    full.fit()
    after = half.evaluate(data(48, 1))
    assert after["reg"]["mse"] < 0.5 * before["reg"]["mse"]  # it learns
    assert after["cls"]["accuracy"] > before["cls"]["accuracy"]
    w_half, w_full = (next(t.model.parameters()) for t in (half, full))
    assert w_half.dtype == torch.float32 and not torch.equal(w_half, w_full)  # float32 weights, other rounding
    assert load_checkpoint(tmp_path / "b" / "last.pt")["config"]["precision"] == "bf16"
    assert "precision" not in load_checkpoint(tmp_path / "f" / "last.pt")["config"]  # older runs' identity
    with pytest.raises(CheckpointError, match="precision"):
        trainer(tmp_path / "x", "fp32", epochs=6).resume(tmp_path / "b" / "last.pt")
    trainer(tmp_path / "y", "bf16", epochs=6).resume(tmp_path / "b" / "last.pt")
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, got 'fp16'"):
        MultiTaskConfig(precision="fp16")
