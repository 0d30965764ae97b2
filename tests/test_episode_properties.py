"""Property-based tests (hypothesis) of episode sampling: the invariants that distributed training and
resuming rely on. Tasks are fixed by index, so splitting a meta-batch across ranks, or restarting a
run, gives exactly the tasks of one uninterrupted single process."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl.data.base import LabelledImages
from mtl.data.episodes import EpisodeSampler, split_classes
from mtl.data.sinusoid import SinusoidTasks
from mtl.utils.distributed import shard_indices

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
CLASSES = 10


def _dataset() -> LabelledImages:
    """10 classes of 7..9 samples, shuffled; image ``i`` holds the value ``i`` (its own index)."""
    sizes = [7 + c % 3 for c in range(CLASSES)]
    targets = torch.arange(CLASSES).repeat_interleave(torch.tensor(sizes))
    targets = targets[torch.randperm(len(targets), generator=torch.Generator().manual_seed(1))]
    images = torch.arange(len(targets), dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    return LabelledImages(images.contiguous(), targets, [f"c{c}" for c in range(CLASSES)])


DATA = _dataset()
SMALLEST = 7
sizes = st.integers(1, 5).flatmap(lambda ways: st.tuples(
    st.just(ways), st.integers(1, 3), st.integers(0, SMALLEST - 3)))


def _ids(x: torch.Tensor) -> torch.Tensor:
    return x[..., 0, 0, 0].long()


def _same(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("support_x", "support_y", "query_x", "query_y"))


@SETTINGS
@given(sizes=sizes, batch=st.integers(1, 6), world=st.integers(1, 4), index=st.integers(0, 50),
       seed=st.integers(0, 2**31))
def test_rank_shards_cover_the_meta_batch_exactly_once(sizes, batch, world, index, seed):
    ways, shots, queries = sizes
    sampler = EpisodeSampler(DATA, ways, shots, queries, seed=seed)
    whole = sampler.batch(index, batch)
    seen = []
    for rank in range(world):
        for j in shard_indices(batch, rank, world):
            assert _same(whole[j], sampler.episode(index * batch + j))  # a rank rebuilds task j on its own
            seen.append(j)
    assert sorted(seen) == list(range(batch))


@SETTINGS
@given(sizes=sizes, index=st.integers(0, 200), seed=st.integers(0, 2**31), drawn=st.integers(0, 5))
def test_fixed_episodes_ignore_what_was_sampled_before(sizes, index, seed, drawn):
    ways, shots, queries = sizes
    fresh = EpisodeSampler(DATA, ways, shots, queries, seed=seed)
    used = EpisodeSampler(DATA, ways, shots, queries, seed=seed)
    for _ in range(drawn):
        used.sample()
    torch.manual_seed(index)  # nor on the global RNG
    assert _same(fresh.episode(index), used.episode(index))


@SETTINGS
@given(sizes=sizes, seed=st.integers(0, 2**31), before=st.integers(0, 4), after=st.integers(1, 4))
def test_a_restored_sampler_continues_the_same_random_sequence(sizes, seed, before, after):
    ways, shots, queries = sizes
    a = EpisodeSampler(DATA, ways, shots, queries, seed=seed)
    for _ in range(before):
        a.sample()
    state = a.state_dict()
    b = EpisodeSampler(DATA, ways, shots, queries, seed=seed)
    b.load_state_dict(state)
    for _ in range(after):
        assert _same(a.sample(), b.sample())


@SETTINGS
@given(sizes=sizes, batch=st.integers(1, 4), seed=st.integers(0, 2**31), index=st.integers(0, 30))
def test_every_episode_is_a_valid_n_way_k_shot_task(sizes, batch, seed, index):
    ways, shots, queries = sizes
    split = split_classes(CLASSES, seed=seed % 1000)["train"] or [0]
    ways = min(ways, len(split))
    sampler = EpisodeSampler(DATA, ways, shots, queries, classes=split, seed=seed)
    ep = sampler.batch(index, batch)
    for t in range(batch):
        s_ids, q_ids = _ids(ep.support_x[t]), _ids(ep.query_x[t])
        assert not set(s_ids.tolist()) & set(q_ids.tolist())  # support and query are disjoint
        assert len(set(s_ids.tolist())) == ways * shots and len(set(q_ids.tolist())) == ways * queries
        classes = ep.classes[t]
        assert len(set(classes.tolist())) == ways and set(classes.tolist()) <= set(split)
        for label in range(ways):  # each label is one class, with K shots and Q queries of it
            assert torch.all(DATA.targets[s_ids[ep.support_y[t] == label]] == classes[label])
            assert torch.all(DATA.targets[q_ids[ep.query_y[t] == label]] == classes[label])
            assert int((ep.support_y[t] == label).sum()) == shots
            assert int((ep.query_y[t] == label).sum()) == queries


@SETTINGS
@given(n=st.integers(1, 40), seed=st.integers(0, 10_000), cut=st.tuples(st.integers(0, 10), st.integers(0, 10)))
def test_class_splits_are_disjoint_and_cover_every_class(n, seed, cut):
    a, b = sorted(cut)
    fractions = (a / 10, (b - a) / 10, (10 - b) / 10)
    splits = split_classes(n, fractions, seed=seed)
    ids = splits["train"] + splits["val"] + splits["test"]
    assert sorted(ids) == list(range(n))
    assert splits == split_classes(n, fractions, seed=seed)  # the same split every run


@SETTINGS
@given(batch=st.integers(1, 6), world=st.integers(1, 4), index=st.integers(0, 100), seed=st.integers(0, 2**31),
       shots=st.integers(1, 5), queries=st.integers(1, 5))
def test_sinusoid_tasks_are_fixed_by_index(batch, world, index, seed, shots, queries):
    tasks = SinusoidTasks(seed=seed)
    whole = tasks.tasks(range(index * batch, (index + 1) * batch), shots, queries)
    for rank in range(world):
        for j in shard_indices(batch, rank, world):
            one = SinusoidTasks(seed=seed).task(index * batch + j, shots, queries)
            assert torch.equal(whole.support_x[j:j + 1], one.support_x)
            assert torch.equal(whole.query_y[j:j + 1], one.query_y)
