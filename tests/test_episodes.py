"""N-way K-shot episodes and class splits: invariants, reproducibility, speed, bad input."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl.data.base import LabelledImages
from mtl.data.episodes import Episode, EpisodeSampler, split_classes
from mtl.errors import ConfigError, DatasetError

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)

NUM_CLASSES = 12


def indexed_dataset() -> LabelledImages:
    """12 classes of 8..10 samples in shuffled order; image ``i`` is filled with the value ``i``,
    so every drawn image tells which sample it is."""
    sizes = [8 + c % 3 for c in range(NUM_CLASSES)]
    targets = torch.arange(NUM_CLASSES).repeat_interleave(torch.tensor(sizes))
    targets = targets[torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))]
    values = torch.arange(len(targets), dtype=torch.float32)
    images = values.reshape(-1, 1, 1, 1).expand(-1, 1, 2, 3)
    names = [f"c{c}" for c in range(NUM_CLASSES)]
    return LabelledImages(images.contiguous(), targets, names)


DATA = indexed_dataset()
SMALLEST = 8


def sample_ids(x: torch.Tensor) -> torch.Tensor:
    """Dataset indices of drawn images ``[..., 1, 2, 3]``."""
    return x[..., 0, 0, 0].long()


def check_episode(ep: Episode, ways: int, shots: int, queries: int, allowed: list[int]) -> None:
    """Every invariant of a single (unbatched) episode."""
    assert not ep.is_batched
    assert (ep.ways, ep.shots, ep.queries) == (ways, shots, queries)
    assert ep.support_x.shape == (ways * shots, 1, 2, 3)
    assert ep.query_x.shape == (ways * queries, 1, 2, 3)
    assert ep.classes.shape == (ways,) and ep.classes.dtype == torch.long
    # labels 0..N-1 in label-major order, K support and Q query samples each
    assert torch.equal(ep.support_y, torch.arange(ways).repeat_interleave(shots))
    assert torch.equal(ep.query_y, torch.arange(ways).repeat_interleave(queries))
    # distinct classes, only from the allowed ones
    assert len(set(ep.classes.tolist())) == ways
    assert set(ep.classes.tolist()) <= set(allowed)
    # every image belongs to the class behind its label; no sample is drawn twice
    support, query = sample_ids(ep.support_x), sample_ids(ep.query_x)
    assert torch.equal(DATA.targets[support], ep.classes[ep.support_y])
    assert torch.equal(DATA.targets[query], ep.classes[ep.query_y])
    drawn = torch.cat([support, query]).tolist()
    assert len(set(drawn)) == len(drawn)


def same(a: Episode, b: Episode) -> bool:
    return all(
        torch.equal(getattr(a, name), getattr(b, name))
        for name in ("support_x", "support_y", "query_x", "query_y", "classes")
    )


# -- split_classes ---------------------------------------------------------------------------


def test_split_classes_default_fractions():
    splits = split_classes(100)
    assert list(splits) == ["train", "val", "test"]
    assert [len(v) for v in splits.values()] == [60, 20, 20]
    assert sorted(sum(splits.values(), [])) == list(range(100))
    assert all(v == sorted(v) for v in splits.values())
    assert splits == split_classes(100, seed=0)
    assert splits != split_classes(100, seed=1)


def test_split_classes_ids_counts_and_rounding():
    ids = [3, 9, 27, 81, 243, 5, 7]
    splits = split_classes(ids, fractions=(0.5, 0.25, 0.25), seed=3)
    assert sorted(sum(splits.values(), [])) == sorted(ids)
    assert [len(v) for v in splits.values()] == [3, 2, 2]  # 3.5 / 1.75 / 1.75 by remainder
    tensor_splits = split_classes(torch.tensor(ids), fractions=(0.5, 0.25, 0.25), seed=3)
    assert tensor_splits == splits
    counted = split_classes(1623, counts=(1028, 172, 423))
    assert [len(v) for v in counted.values()] == [1028, 172, 423]
    partial = split_classes(10, counts=(3, 0, 2))
    assert [len(v) for v in partial.values()] == [3, 0, 2]
    assert not set(partial["train"]) & set(partial["test"])


@SETTINGS
@given(
    n=st.integers(1, 300),
    weights=st.lists(st.integers(0, 10), min_size=3, max_size=3).filter(lambda w: sum(w) > 0),
    seed=st.integers(0, 1000),
)
def test_split_classes_property(n, weights, seed):
    fractions = [w / sum(weights) for w in weights]
    splits = split_classes(n, fractions=fractions, seed=seed)
    members = sum(splits.values(), [])
    assert sorted(members) == list(range(n))  # disjoint and complete
    for size, share in zip(map(len, splits.values()), fractions):
        assert abs(size - share * n) < 1.0 + 1e-9
    assert splits == split_classes(n, fractions=fractions, seed=seed)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (
            (10,),
            {"fractions": (0.5, 0.2, 0.2)},
            r"fractions must be three numbers >= 0 summing to 1 \(train, val, test\), "
            r"got \(0.5, 0.2, 0.2\) \(sum 0.9\)",
        ),
        ((10,), {"fractions": (1.2, -0.2, 0.0)}, r"fractions must be three numbers >= 0"),
        ((10,), {"fractions": (0.5, 0.5)}, r"fractions must be three values .* got 2"),
        ((10,), {"fractions": (0.5, float("nan"), 0.5)}, r"fractions must be three numbers"),
        ((10,), {"counts": (5, 5, 5)}, r"counts \(5, 5, 5\) add up to 15, more than the 10 "),
        ((10,), {"counts": (5, -1, 1)}, r"counts must be three integers >= 0"),
        ((10,), {"counts": (5, 1, 1), "fractions": (1, 0, 0)}, r"either fractions or counts"),
        ((0,), {}, r"classes must be an integer >= 1, got 0"),
        (([],), {}, r"classes must hold at least one class id, got an empty sequence"),
        (([1, 2, 2],), {}, r"classes must not repeat a class id, got 2 more than once"),
        (([1, -4],), {}, r"classes must hold integer class ids >= 0, got -4"),
        (("abc",), {}, r"classes must be a sequence of class ids, got 'abc'"),
        ((10,), {"seed": -1}, r"seed must be an integer >= 0, got -1"),
    ],
)
def test_split_classes_bad_input(args, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        split_classes(*args, **kwargs)


# -- episodes --------------------------------------------------------------------------------


def test_single_episode_invariants():
    sampler = EpisodeSampler(DATA, ways=5, shots=3, queries=4, seed=0)
    for _ in range(20):
        check_episode(sampler.sample(), 5, 3, 4, list(range(NUM_CLASSES)))
    assert sampler.num_classes == NUM_CLASSES


def test_batched_episode_invariants():
    sampler = EpisodeSampler(DATA, ways=4, shots=2, queries=5, seed=1)
    batch = sampler.sample_batch(6)
    assert batch.is_batched and batch.num_tasks == 6
    assert (batch.ways, batch.shots, batch.queries) == (4, 2, 5)
    assert batch.support_x.shape == (6, 8, 1, 2, 3) and batch.support_y.shape == (6, 8)
    assert batch.query_x.shape == (6, 20, 1, 2, 3) and batch.classes.shape == (6, 4)
    for task in batch.unbatch():
        check_episode(task, 4, 2, 5, list(range(NUM_CLASSES)))
    # tasks in a batch are different draws
    assert len({tuple(t.classes.tolist()) for t in batch.unbatch()}) > 1


def test_classes_drawn_only_from_the_split():
    splits = split_classes(NUM_CLASSES, seed=0)
    sampler = EpisodeSampler(DATA, 2, 1, 2, classes=splits["val"], split="val")
    seen: set[int] = set()
    for task in sampler.sample_batch(50).unbatch():
        check_episode(task, 2, 1, 2, splits["val"])
        seen |= set(task.classes.tolist())
    assert seen == set(splits["val"])  # and every class of the split does come up


def test_random_label_order_and_sample_coverage():
    sampler = EpisodeSampler(DATA, ways=3, shots=1, queries=1, classes=[0, 1, 2], seed=0)
    batch = sampler.sample_batch(60)
    orders = {tuple(c) for c in batch.classes.tolist()}
    assert len(orders) == 6  # all permutations of the three classes occur as label orders
    drawn = set(sample_ids(batch.support_x).flatten().tolist())
    assert drawn == set(torch.nonzero(DATA.targets <= 2).flatten().tolist())


def test_no_queries():
    ep = EpisodeSampler(DATA, ways=3, shots=SMALLEST, queries=0).sample()
    assert ep.query_x.shape == (0, 1, 2, 3) and ep.query_y.shape == (0,)
    check_episode(ep, 3, SMALLEST, 0, list(range(NUM_CLASSES)))


def test_reproducible_by_seed_and_independent_of_global_rng():
    torch.manual_seed(123)
    a = EpisodeSampler(DATA, 5, 2, 3, seed=9)
    first = [a.sample() for _ in range(3)] + [a.sample_batch(4)]
    torch.manual_seed(456)
    b = EpisodeSampler(DATA, 5, 2, 3, seed=9)
    state = torch.get_rng_state()
    second = [b.sample() for _ in range(3)] + [b.sample_batch(4)]
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is neither used nor moved
    assert all(same(x, y) for x, y in zip(first, second))
    other = EpisodeSampler(DATA, 5, 2, 3, seed=10).sample_batch(4)
    assert not same(first[-1], other)
    assert not same(first[0], first[1])  # the stream advances


def test_fixed_episodes_by_index():
    sampler = EpisodeSampler(DATA, 4, 2, 3, seed=5)
    first = sampler.episode(17)
    sampler.sample_batch(10)  # random sampling in between changes nothing
    assert same(first, sampler.episode(17))
    assert same(first, EpisodeSampler(DATA, 4, 2, 3, seed=5).episode(17))
    assert not same(first, sampler.episode(18))
    assert not same(first, EpisodeSampler(DATA, 4, 2, 3, seed=6).episode(17))
    check_episode(first, 4, 2, 3, list(range(NUM_CLASSES)))
    batch = sampler.batch(3, 6)  # episodes 18..23
    assert batch.num_tasks == 6
    assert all(same(batch[j], sampler.episode(18 + j)) for j in range(6))
    assert same(sampler.batch(2, 8)[1], first)


def test_fixed_batches_cover_an_evaluation_set():
    sampler = EpisodeSampler(DATA, 3, 1, 2, seed=0)
    batches = list(sampler.fixed_batches(25, 10))
    assert [b.num_tasks for b in batches] == [10, 10, 5]
    tasks = [t for b in batches for t in b.unbatch()]
    assert all(same(t, sampler.episode(i)) for i, t in enumerate(tasks))
    again = [t for b in sampler.fixed_batches(25, 7) for t in b.unbatch()]
    assert all(same(x, y) for x, y in zip(tasks, again))


def test_iteration_and_state_dict():
    sampler = EpisodeSampler(DATA, 2, 1, 1, seed=2)
    episodes = list(itertools.islice(sampler, 3))
    assert len(episodes) == 3 and not same(episodes[0], episodes[1])
    state = sampler.state_dict()
    following = sampler.sample_batch(3)
    sampler.load_state_dict(state)
    assert same(sampler.sample_batch(3), following)


class PlainDataset:
    """Not a LabelledImages: ``targets`` plus ``dataset[i] -> (image, label)``."""

    def __init__(self, data: LabelledImages) -> None:
        self.targets = data.targets.tolist()
        self._data = data

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._data.images[index], self.targets[index]


def test_any_dataset_with_targets():
    plain = EpisodeSampler(PlainDataset(DATA), 3, 2, 2, seed=4)
    fast = EpisodeSampler(DATA, 3, 2, 2, seed=4)
    assert same(plain.sample_batch(3), fast.sample_batch(3))
    assert same(plain.episode(5), fast.episode(5))
    empty_queries = EpisodeSampler(PlainDataset(DATA), 3, 2, 0).sample()
    assert empty_queries.query_x.shape == (0, 1, 2, 3)


def test_episode_helpers():
    sampler = EpisodeSampler(DATA, 3, 2, 1, seed=0)
    batch = sampler.sample_batch(4)
    moved = batch.to("cpu")
    assert same(moved, batch)
    restacked = Episode.stack(batch.unbatch())
    assert same(restacked, batch)
    assert same(batch[-1], batch[3])
    assert "tasks=4, ways=3, shots=2, queries=1" in repr(batch)
    single = sampler.sample()
    assert single.num_tasks == 1 and not single.is_batched
    with pytest.raises(TypeError, match="a single episode cannot be indexed"):
        single[0]
    with pytest.raises(IndexError, match="task 4 is out of range for a batch of 4"):
        batch[4]
    with pytest.raises(ConfigError, match="Episode.stack needs one or more single"):
        Episode.stack([])
    assert "ways=3" in repr(sampler)


@SETTINGS
@given(
    ways=st.integers(1, NUM_CLASSES),
    shots=st.integers(1, 5),
    queries=st.integers(0, 3),
    num_tasks=st.integers(1, 4),
    seed=st.integers(0, 2**31),
    index=st.integers(0, 10**6),
)
def test_property_episode_invariants(ways, shots, queries, num_tasks, seed, index):
    sampler = EpisodeSampler(DATA, ways, shots, queries, seed=seed)
    allowed = list(range(NUM_CLASSES))
    check_episode(sampler.sample(), ways, shots, queries, allowed)
    for task in sampler.sample_batch(num_tasks).unbatch():
        check_episode(task, ways, shots, queries, allowed)
    fixed = sampler.episode(index)
    check_episode(fixed, ways, shots, queries, allowed)
    assert same(fixed, EpisodeSampler(DATA, ways, shots, queries, seed=seed).episode(index))


@SETTINGS
@given(
    classes=st.lists(st.integers(0, NUM_CLASSES - 1), min_size=1, max_size=12, unique=True),
    data=st.data(),
)
def test_property_classes_subset(classes, data):
    ways = data.draw(st.integers(1, len(classes)))
    sampler = EpisodeSampler(DATA, ways, 1, 1, classes=classes, seed=0)
    for task in sampler.sample_batch(3).unbatch():
        check_episode(task, ways, 1, 1, classes)


def test_large_batch_shapes():
    """20-way 5-shot 15-query, 32 tasks, from 4,800 images of 28x28 (timing lives in benchmarks/)."""
    data = LabelledImages(
        torch.rand(4800, 1, 28, 28), torch.arange(240).repeat_interleave(20)
    )
    sampler = EpisodeSampler(data, ways=20, shots=5, queries=15, seed=0)
    batch = sampler.sample_batch(32)
    assert batch.support_x.shape == (32, 100, 1, 28, 28)
    assert batch.query_x.shape == (32, 300, 1, 28, 28)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"ways": 5, "classes": [0, 1, 2], "split": "test"},
            DatasetError,
            r"ways=5 is more than the 3 classes of split 'test'; allowed: 1\.\.3",
        ),
        ({"ways": 13}, DatasetError, r"ways=13 is more than the 12 classes of the dataset"),
        (
            {"ways": 4, "classes": [0, 1, 2]},
            DatasetError,
            r"ways=4 is more than the 3 classes of the given classes",
        ),
        (
            {"shots": 5, "queries": 4},
            DatasetError,
            r"shots \+ queries = 9 is more than the 8 samples of class 0 \('c0'\), the smallest "
            r"of the 12 classes of the dataset; allowed: shots \+ queries <= 8",
        ),
        (
            {"shots": 1, "queries": 0, "classes": [0, 40], "split": "val"},
            DatasetError,
            r"shots \+ queries = 1 is more than the 0 samples of class 40, the smallest of the 2 "
            r"classes of split 'val'",
        ),
        ({"ways": 0}, ConfigError, r"ways must be an integer >= 1, got 0"),
        ({"shots": 0}, ConfigError, r"shots must be an integer >= 1, got 0"),
        ({"shots": -2}, ConfigError, r"shots must be an integer >= 1, got -2"),
        ({"queries": -1}, ConfigError, r"queries must be an integer >= 0, got -1"),
        ({"shots": 1.5}, ConfigError, r"shots must be an integer >= 1, got 1.5"),
        ({"seed": -1}, ConfigError, r"seed must be an integer >= 0, got -1"),
        ({"classes": []}, ConfigError, r"classes must hold at least one class id"),
        ({"classes": [1, 1]}, ConfigError, r"classes must not repeat a class id, got 1"),
        ({"classes": [0, -1]}, ConfigError, r"classes must hold integer class ids >= 0, got -1"),
        (
            {"classes": torch.tensor([0.0, 1.0])},
            ConfigError,
            r"classes must be a 1-D integer tensor of class ids, got torch.float32",
        ),
    ],
)
def test_bad_sampler_arguments(kwargs, error, match):
    args = {"ways": 2, "shots": 1, "queries": 1} | kwargs
    with pytest.raises(error, match=match):
        EpisodeSampler(DATA, **args)


def test_bad_datasets():
    with pytest.raises(DatasetError, match="dataset must have a 'targets' attribute"):
        EpisodeSampler(object(), 2, 1, 1)

    class FloatTargets:
        targets = torch.tensor([0.0, 1.0])

    with pytest.raises(DatasetError, match=r"dataset.targets must be a 1-D integer tensor"):
        EpisodeSampler(FloatTargets(), 2, 1, 1)

    class Mismatched:
        targets = torch.tensor([0, 1, 1])
        images = torch.zeros(2, 1, 2, 2)

    with pytest.raises(DatasetError, match="dataset.images has 2 samples but dataset.targets has"):
        EpisodeSampler(Mismatched(), 2, 1, 1)

    class Empty:
        targets = torch.zeros(0, dtype=torch.long)

    with pytest.raises(DatasetError, match="dataset has no samples"):
        EpisodeSampler(Empty(), 1, 1, 1)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.sample_batch(0), r"num_tasks must be an integer >= 1, got 0"),
        (lambda s: s.episode(-1), r"index must be an integer >= 0, got -1"),
        (lambda s: s.batch(-1, 4), r"index must be an integer >= 0, got -1"),
        (lambda s: s.batch(0, 0), r"num_tasks must be an integer >= 1, got 0"),
        (lambda s: next(s.fixed_batches(0, 4)), r"num_episodes must be an integer >= 1, got 0"),
    ],
)
def test_bad_sampler_calls(call, match):
    with pytest.raises(ConfigError, match=match):
        call(EpisodeSampler(DATA, 2, 1, 1))
