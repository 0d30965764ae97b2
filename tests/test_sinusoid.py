"""Sinusoid regression tasks (Finn et al. 2017): ranges, the target formula, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl.data.sinusoid import SinusoidBatch, SinusoidTasks
from mtl.errors import ConfigError

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def test_shapes_and_default_ranges():
    batch = SinusoidTasks(seed=0).sample(batch_size=500, shots=5, queries=7)
    assert isinstance(batch, SinusoidBatch)
    assert batch.support_x.shape == (500, 5, 1) and batch.support_y.shape == (500, 5, 1)
    assert batch.query_x.shape == (500, 7, 1) and batch.query_y.shape == (500, 7, 1)
    assert batch.amplitude.shape == (500,) and batch.phase.shape == (500,)
    assert (batch.num_tasks, batch.shots, batch.queries) == (500, 5, 7)
    assert all(t.dtype == torch.float32 for t in vars(batch).values())
    assert 0.1 <= float(batch.amplitude.min()) and float(batch.amplitude.max()) <= 5.0
    assert 0.0 <= float(batch.phase.min()) and float(batch.phase.max()) <= math.pi
    xs = torch.cat([batch.support_x, batch.query_x], dim=1)
    assert -5.0 <= float(xs.min()) and float(xs.max()) <= 5.0
    # the draws cover their ranges (uniform, not a constant)
    assert float(batch.amplitude.max() - batch.amplitude.min()) > 4.0
    assert float(batch.phase.max() - batch.phase.min()) > 2.5
    assert float(xs.max() - xs.min()) > 9.0


def test_targets_follow_amplitude_sin_x_minus_phase():
    batch = SinusoidTasks(seed=3).sample(16, 10, 10)
    a, p = batch.amplitude[:, None, None], batch.phase[:, None, None]
    torch.testing.assert_close(batch.support_y, a * torch.sin(batch.support_x - p))
    torch.testing.assert_close(batch.query_y, a * torch.sin(batch.query_x - p))


def test_sign_convention_phase_shifts_right():
    """y = A sin(x - phase): a phase of pi/2 turns the sine into -A cos(x)."""
    x = torch.tensor([[0.0, math.pi / 2, math.pi]])
    y = SinusoidTasks.function(x, torch.tensor([2.0]), torch.tensor([math.pi / 2]))
    torch.testing.assert_close(y, torch.tensor([[-2.0, 0.0, 2.0]]), atol=1e-6, rtol=0)
    tasks = SinusoidTasks(amplitude=(2.0, 2.0), phase=(math.pi / 2, math.pi / 2), seed=0)
    batch = tasks.sample(4, 8, 8)
    torch.testing.assert_close(batch.support_y, -2.0 * torch.cos(batch.support_x))


def test_custom_ranges_and_noise():
    tasks = SinusoidTasks(amplitude=(1.0, 2.0), phase=(-1.0, 0.0), x_range=(0.0, 1.0), seed=1)
    batch = tasks.sample(200, 4, 4)
    assert 1.0 <= float(batch.amplitude.min()) and float(batch.amplitude.max()) <= 2.0
    assert -1.0 <= float(batch.phase.min()) and float(batch.phase.max()) <= 0.0
    assert 0.0 <= float(batch.support_x.min()) and float(batch.query_x.max()) <= 1.0
    noisy = SinusoidTasks(noise_std=0.3, seed=2)
    batch = noisy.sample(100, 10, 10)
    clean = SinusoidTasks.function(batch.query_x, batch.amplitude, batch.phase)
    residual = batch.query_y - clean
    assert 0.2 < float(residual.std()) < 0.4
    again = SinusoidTasks(noise_std=0.3, seed=2).sample(100, 10, 10)
    assert torch.equal(batch.query_y, again.query_y)
    fixed = noisy.task(3, 5, 5)
    assert torch.equal(fixed.support_y, noisy.task(3, 5, 5).support_y)


def test_sample_reproducible_by_seed_and_independent_of_global_rng():
    torch.manual_seed(1)
    first = SinusoidTasks(seed=7).sample(8, 5, 5)
    torch.manual_seed(2)
    second = SinusoidTasks(seed=7).sample(8, 5, 5)
    assert all(torch.equal(a, b) for a, b in zip(vars(first).values(), vars(second).values()))
    other = SinusoidTasks(seed=8).sample(8, 5, 5)
    assert not torch.equal(first.amplitude, other.amplitude)
    tasks = SinusoidTasks(seed=7)
    state = torch.get_rng_state()
    a, b = tasks.sample(8, 5, 5), tasks.sample(8, 5, 5)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched
    assert not torch.equal(a.support_x, b.support_x)  # the sampler's stream advances


def test_fixed_tasks_are_stable():
    tasks = SinusoidTasks(seed=4)
    first = tasks.task(11, shots=5, queries=20)
    tasks.sample(32, 5, 5)  # sampling in between changes nothing
    again = tasks.task(11, shots=5, queries=20)
    assert all(torch.equal(a, b) for a, b in zip(vars(first).values(), vars(again).values()))
    assert first.num_tasks == 1
    assert not torch.equal(first.amplitude, tasks.task(12, 5, 20).amplitude)
    assert torch.equal(first.amplitude, SinusoidTasks(seed=4).task(11, 1, 1).amplitude)
    assert not torch.equal(first.amplitude, SinusoidTasks(seed=5).task(11, 5, 20).amplitude)
    # more points only append; support and query streams are separate
    more = tasks.task(11, shots=9, queries=3)
    assert torch.equal(more.support_x[:, :5], first.support_x)
    assert torch.equal(more.query_x, first.query_x[:, :3])
    stacked = tasks.tasks(range(10, 14), shots=5, queries=20)
    assert stacked.num_tasks == 4
    assert torch.equal(stacked[1].support_x, first.support_x)
    assert torch.equal(stacked[1].query_y, first.query_y)


def test_batch_helpers():
    batch = SinusoidTasks().sample(3, 2, 4)
    moved = batch.to("cpu")
    assert torch.equal(moved.query_y, batch.query_y)
    assert batch[-1].num_tasks == 1 and torch.equal(batch[-1].phase, batch.phase[2:])
    assert batch[0:2].num_tasks == 2
    with pytest.raises(IndexError, match="task 3 is out of range for 3 tasks"):
        batch[3]


@SETTINGS
@given(
    low=st.floats(0.0, 3.0),
    width=st.floats(0.0, 3.0),
    shots=st.integers(1, 12),
    queries=st.integers(1, 12),
    batch_size=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
def test_property_ranges_and_formula(low, width, shots, queries, batch_size, seed):
    tasks = SinusoidTasks(amplitude=(low, low + width), x_range=(-low, low + width), seed=seed)
    for batch in (tasks.sample(batch_size, shots, queries), tasks.task(seed, shots, queries)):
        assert batch.support_x.shape[1:] == (shots, 1) and batch.query_x.shape[1:] == (queries, 1)
        assert float(batch.amplitude.min()) >= low - 1e-5
        assert float(batch.amplitude.max()) <= low + width + 1e-5
        assert float(batch.support_x.min()) >= -low - 1e-5
        assert float(batch.query_x.max()) <= low + width + 1e-5
        expected = SinusoidTasks.function(batch.query_x, batch.amplitude, batch.phase)
        torch.testing.assert_close(batch.query_y, expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"amplitude": (5.0, 1.0)},
            r"amplitude must be a finite pair with low <= high, got \(5.0, 1.0\)",
        ),
        ({"amplitude": (-1.0, 1.0)}, r"amplitude must lie in \[0.0, inf\), got \(-1.0, 1.0\)"),
        ({"phase": (0.0, float("inf"))}, r"phase must be a finite pair with low <= high"),
        ({"x_range": (1.0,)}, r"x_range must be a pair \(low, high\) of numbers, got \(1.0,\)"),
        ({"x_range": "ab"}, r"x_range must be a pair \(low, high\) of numbers, got 'ab'"),
        ({"noise_std": -0.5}, r"noise_std must be a finite number >= 0, got -0.5"),
        ({"seed": -2}, r"seed must be an integer >= 0, got -2"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SinusoidTasks(**kwargs)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: t.sample(4, 0, 5), r"shots must be an integer >= 1, got 0"),
        (lambda t: t.sample(4, 5, 0), r"queries must be an integer >= 1, got 0"),
        (lambda t: t.sample(0, 5, 5), r"batch_size must be an integer >= 1, got 0"),
        (lambda t: t.sample(4, 2.0, 5), r"shots must be an integer >= 1, got 2.0"),
        (lambda t: t.task(-1, 5, 5), r"index must be an integer >= 0, got -1"),
        (lambda t: t.task(0, -5, 5), r"shots must be an integer >= 1, got -5"),
        (lambda t: t.tasks([], 5, 5), r"indices must name at least one task"),
    ],
)
def test_bad_calls(call, match):
    with pytest.raises(ConfigError, match=match):
        call(SinusoidTasks())
