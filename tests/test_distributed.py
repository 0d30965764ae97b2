"""Data-parallel training under torchrun (gloo, 2 CPU processes) equals a single process with the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mtl.cli import main
from mtl.errors import ConfigError
from mtl.utils import distributed as dist_utils
from mtl.utils import load_checkpoint

FEWSHOT = ["fewshot", "train", "--algo", "maml", "--dataset", "sinusoid", "--backbone-kwargs",
           '{"hidden": [16, 16]}', "--shots", "5", "--queries", "5", "--meta-batch", "4",
           "--budget-iterations", "5", "--validate-every", "2", "--checkpoint-every", "2",
           "--validation-tasks", "2", "--test-tasks", "4", "--no-progress", "--device", "cpu"]
MULTITASK = ["multitask", "--dataset", "synthetic", "--train-samples", "96", "--batch-size", "16", "--epochs", "2",
             "--weighting", "uncertainty", "--no-progress", "--device", "cpu"]

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    torch.set_num_threads(1)
    from mtl.cli import main
    from mtl.utils import distributed as dist_utils
    ctx = dist_utils.init_distributed("cpu")
    print(f"rank {ctx.rank} of {ctx.world_size} on {ctx.backend}", flush=True)
    codes = [main(argv) for argv in json.loads(sys.argv[1])]
    dist_utils.shutdown_distributed()
    sys.exit(max(codes))
""")


def _gloo_or_skip() -> None:
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this PyTorch build")
    if not dist.is_gloo_available():
        pytest.skip("the gloo backend is not available in this PyTorch build")


def _params(path):
    state = load_checkpoint(path)
    return state.get("algo", state.get("model"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One torchrun launch with 2 processes (both commands), and the same commands in this process."""
    _gloo_or_skip()
    root = tmp_path_factory.mktemp("dist")
    two, one = root / "two", root / "one"
    commands = {}
    for name, argv in (("fewshot", FEWSHOT), ("multitask", MULTITASK)):
        commands[name] = lambda out, argv=argv, name=name: [*argv, "--out", str(out / name),
                                                           "--json", str(out / f"{name}.json")]
    script = root / "launch.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in dist_utils.ENV_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         json.dumps([commands["fewshot"](two), commands["multitask"](two)])],
        capture_output=True, text=True, timeout=240, env=env, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in commands:
        assert main(commands[name](one)) == 0
    return one, two, proc.stdout


def test_both_ranks_joined_with_gloo(runs):
    _, _, out = runs
    assert "rank 0 of 2 on gloo" in out and "rank 1 of 2 on gloo" in out
    assert out.count("maml: mse") == 1  # only rank 0 prints results


def test_meta_training_equals_a_single_process_run(runs):
    one, two, _ = runs
    a, b = _params(one / "fewshot" / "last.pt"), _params(two / "fewshot" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    ja, jb = json.loads((one / "fewshot.json").read_text()), json.loads((two / "fewshot.json").read_text())
    assert ja["meta_iterations"] == jb["meta_iterations"] == 5
    assert ja["mse"] == pytest.approx(jb["mse"], rel=1e-4)
    assert ja["best_iteration"] == jb["best_iteration"]
    la = (one / "fewshot" / "metrics.csv").read_text().splitlines()
    lb = (two / "fewshot" / "metrics.csv").read_text().splitlines()
    assert len(la) == len(lb) == 6  # header + 5 iterations, written once (rank 0 only)


def test_multitask_training_equals_a_single_process_run(runs):
    one, two, _ = runs
    a, b = _params(one / "multitask" / "last.pt"), _params(two / "multitask" / "last.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    wa = load_checkpoint(one / "multitask" / "last.pt")["weighting"]
    wb = load_checkpoint(two / "multitask" / "last.pt")["weighting"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)  # the uncertainty log-variances
    ja, jb = json.loads((one / "multitask.json").read_text()), json.loads((two / "multitask.json").read_text())
    assert ja["training"]["steps"] == jb["training"]["steps"] == 12
    for task, value in ja["metrics"].items():
        assert jb["metrics"][task] == pytest.approx(value, rel=1e-4, abs=1e-5)


def test_single_process_helpers_are_no_ops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = dist_utils.init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main) == (0, 1, True)
    assert dist_utils.shard_indices(5) == [0, 1, 2, 3, 4]
    assert dist_utils.shard_indices(5, 1, 2) == [1, 3] and dist_utils.shard_indices(1, 1, 2) == []
    w = torch.nn.Parameter(torch.ones(3))
    w.grad = torch.full((3,), 4.0)
    dist_utils.all_reduce_gradients([w], divisor=2.0)
    assert torch.equal(w.grad, torch.full((3,), 2.0))
    assert dist_utils.any_process(True) and not dist_utils.any_process(False)
    assert dist_utils.broadcast_state({"a": 1}) == {"a": 1}


def test_bad_environment_and_arguments_are_clear_errors(monkeypatch):
    with pytest.raises(ConfigError, match="rank must be in"):
        dist_utils.shard_indices(4, 2, 2)
    with pytest.raises(ConfigError, match="n must be an integer"):
        dist_utils.shard_indices(-1, 0, 1)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE must be an integer"):
        dist_utils.init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="start the processes with torchrun"):
        dist_utils.init_distributed("cpu")
    assert main(["selftrain", "--rounds", "1"]) == 2  # selftrain refuses to run distributed
