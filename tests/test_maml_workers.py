"""``MAML.outer_backward(..., workers=N)``: tasks on N threads give the one-thread gradients."""

from __future__ import annotations

import pytest
import torch
from fewshot_helpers import make_tasks, tiny_conv

from meta import ANIL, FOMAML, MAML, MAMLPlusPlus, MetaSGD, ProtoMAML
from mtl.errors import ConfigError

BUILDERS = {
    "maml": lambda: MAML(tiny_conv(), inner_lr=0.1),
    "maml_2steps": lambda: MAML(tiny_conv(), inner_lr=0.1, inner_steps=2),
    "fomaml": lambda: FOMAML(tiny_conv(), inner_lr=0.1),
    "metasgd": lambda: MetaSGD(tiny_conv(), inner_lr=0.1),
    "anil": lambda: ANIL(tiny_conv(), inner_lr=0.1),
    "mamlpp": lambda: MAMLPlusPlus(tiny_conv(), inner_steps=2, first_order_until=None),
    "protomaml": lambda: ProtoMAML(tiny_conv(), inner_lr=0.1),
}


def _grads(algo):
    return {n: p.grad.clone() for n, p in algo.named_parameters() if p.grad is not None}


def _run(build, tasks, workers, iteration=3):
    torch.manual_seed(0)
    algo = build()
    metrics = algo.outer_backward(*tasks, iteration=iteration, workers=workers)
    return _grads(algo), metrics


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("workers", [2, 3])
def test_workers_give_the_one_thread_gradients(name, workers):
    tasks = make_tasks((1, 16, 16), tasks=5)  # 5 tasks: workers get unequal shares
    ref, ref_metrics = _run(BUILDERS[name], tasks, 1)
    got, metrics = _run(BUILDERS[name], tasks, workers)
    assert ref.keys() == got.keys() and ref
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=1e-10, atol=1e-12, msg=key)
    assert metrics.keys() == ref_metrics.keys()
    for key in ref_metrics:
        assert metrics[key] == pytest.approx(ref_metrics[key], rel=1e-12, abs=1e-12)


def test_workers_are_deterministic_and_accumulate_into_grad():
    tasks = make_tasks((1, 16, 16), tasks=4)
    a, _ = _run(BUILDERS["maml"], tasks, 2)
    b, _ = _run(BUILDERS["maml"], tasks, 2)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    torch.manual_seed(0)
    algo = BUILDERS["maml"]()
    algo.outer_backward(*tasks, workers=2)
    algo.outer_backward(*tasks, workers=2)  # like backward(): a second call adds to .grad
    twice = _grads(algo)
    ref, _ = _run(BUILDERS["maml"], tasks, 1, iteration=None)
    for key in ref:
        torch.testing.assert_close(twice[key], 2 * ref[key], rtol=1e-10, atol=1e-12, msg=key)


def test_workers_restore_the_thread_count_and_pass_errors_on():
    before = torch.get_num_threads()
    tasks = make_tasks((1, 16, 16), tasks=3)
    _run(BUILDERS["fomaml"], tasks, 2)
    assert torch.get_num_threads() == before

    def failing_loss(out, y):
        raise ValueError("loss failed inside a worker")

    algo = MAML(tiny_conv(), inner_lr=0.1, loss=failing_loss)
    with pytest.raises(ValueError, match="inside a worker"):
        algo.outer_backward(*tasks, workers=2)
    assert torch.get_num_threads() == before


def test_bad_workers_are_refused():
    tasks = make_tasks((1, 16, 16), tasks=2)
    algo = MAML(tiny_conv(), inner_lr=0.1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="workers"):
            algo.outer_backward(*tasks, workers=bad)
    batched = FOMAML(tiny_conv(), inner_lr=0.1, batched=True)
    with pytest.raises(ConfigError, match="batched=False"):
        batched.outer_backward(*tasks, workers=2)


def test_cli_task_workers_train_and_resume_like_one_worker(tmp_path, capsys):
    from mtl.cli import main
    from mtl.utils import load_checkpoint

    tiny = ["--glyph-classes", "12,6,6", "--backbone-kwargs", '{"hidden": 8}', "--queries", "3",
            "--validation-tasks", "4", "--test-tasks", "6", "--no-progress", "--meta-batch", "3",
            "--validate-every", "2", "--checkpoint-every", "2", "--algo", "maml", "--threads", "2"]
    assert main(["fewshot", "train", "--budget-iterations", "2", "--out", str(tmp_path / "one"), *tiny]) == 0
    halfway = load_checkpoint(tmp_path / "one" / "last.pt")["algo"]
    assert main(["fewshot", "train", "--budget-iterations", "4", "--out", str(tmp_path / "one"), "--resume",
                 *tiny]) == 0
    assert main(["fewshot", "train", "--budget-iterations", "2", "--out", str(tmp_path / "two"),
                 "--task-workers", "2", *tiny]) == 0
    # the worker count is how a run executes, not what it is: resuming with another count is allowed
    assert main(["fewshot", "train", "--budget-iterations", "4", "--out", str(tmp_path / "two"),
                 "--task-workers", "3", "--resume", *tiny]) == 0
    a = load_checkpoint(tmp_path / "one" / "last.pt")["algo"]
    b = load_checkpoint(tmp_path / "two" / "last.pt")["algo"]
    # The gradients agree to float32 rounding (exactly checked above in float64), but Adam divides
    # by the gradients' own scale, so elements with near-zero gradients take rounding-sized
    # gradients to full-size steps: the two runs are compared against how far the last two
    # iterations moved each tensor. A convolution bias before BatchNorm has a zero gradient up to
    # rounding, so all its steps are such noise: those tensors are not comparable.
    compared = [k for k in a if not k.endswith("conv.bias") and a[k].is_floating_point()]
    assert len(compared) > 10
    for key in compared:
        moved = (a[key] - halfway[key]).norm()
        assert moved > 0, key
        assert (b[key] - a[key]).norm() < 0.05 * moved, key  # measured: at most 0.014


def test_cli_task_workers_refused_outside_the_maml_family(capsys):
    from mtl.cli import main

    code = main(["fewshot", "train", "--algo", "protonet", "--task-workers", "2", "--budget-iterations", "1",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "task_workers=2" in err and "protonet" in err and err.count("\n") == 1


def test_resume_accepts_a_checkpoint_written_before_newer_trainer_settings(tmp_path):
    from types import SimpleNamespace

    from meta import MetaTrainer, MetaTrainerConfig
    from mtl.utils import Budget, load_checkpoint, save_checkpoint

    tasks = make_tasks((1, 16, 16), tasks=2)
    source = lambda i: SimpleNamespace(support_x=tasks[0], support_y=tasks[1], query_x=tasks[2],  # noqa: E731
                                       query_y=tasks[3])
    cfg = MetaTrainerConfig(validate_every=100, checkpoint_every=1, progress=False)
    MetaTrainer(MAML(tiny_conv(), inner_lr=0.1), source, None, cfg, out_dir=tmp_path).fit(Budget(iterations=1))
    state = load_checkpoint(tmp_path / "last.pt")
    for key in ("validate_at_start", "task_workers"):  # as an older version wrote it
        state["config"].pop(key, None)
    save_checkpoint(tmp_path / "last.pt", state)
    trainer = MetaTrainer(MAML(tiny_conv(), inner_lr=0.1), source, None, cfg, out_dir=tmp_path)
    trainer.resume(tmp_path / "last.pt")
    assert trainer.iteration == 1
    changed = MetaTrainerConfig(validate_every=100, checkpoint_every=1, progress=False, validate_at_start=True)
    with pytest.raises(Exception, match="validate_at_start"):
        MetaTrainer(MAML(tiny_conv(), inner_lr=0.1), source, None, changed, out_dir=tmp_path).resume(
            tmp_path / "last.pt")


def test_workers_do_not_deadlock_on_shared_parameters():
    """Workers first touching the same parameter used to deadlock inside torch (GIL vs autograd lock).

    Before the fix, a stress loop like this one hung within 0-20 rounds in each of three runs (and
    this test, run four times without the fix, failed three); it runs in a subprocess so that a hang fails the
    test instead of stopping the suite.
    """
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from fewshot_helpers import make_tasks\n"
        "from test_maml_workers import BUILDERS\n"
        "tasks = make_tasks((1, 16, 16), tasks=5)\n"
        "for _ in range(12):\n"
        "    for name in sorted(BUILDERS):\n"
        "        for workers in (2, 3):\n"
        "            BUILDERS[name]().outer_backward(*tasks, iteration=3, workers=workers)\n"
        "print('done')\n"
    )
    try:
        run = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], capture_output=True,
                             text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("task workers deadlocked (no result within 240 s)")
    assert run.returncode == 0 and run.stdout.strip() == "done", run.stderr[-2000:]
