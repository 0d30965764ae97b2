"""N-way K-shot episodes for few-shot learning (Vinyals et al. 2016, "Matching Networks for One
Shot Learning"; Snell et al. 2017, "Prototypical Networks for Few-shot Learning").

An *episode* (or task) picks ``N`` classes at random, relabels them ``0..N-1`` in a random order,
and draws ``K`` support ("shot") and ``Q`` query samples of each, the two disjoint.  A learner
adapts on the support set and is scored on the query set.  Classes are first divided between
training, validation and testing (:func:`split_classes`) so that test episodes only contain
classes never seen in training.

:class:`EpisodeSampler` draws episodes from any labelled dataset -- a
:class:`~mtl.data.base.LabelledImages`, or any object with a ``targets`` tensor whose items
``dataset[i]`` are images or ``(image, label)`` pairs -- either one at a time or as a batch of
tasks stacked along a leading dimension, ready for batched inner loops.  Random episodes come
from the sampler's own generator (reproducible by seed, independent of the global RNG); fixed
episodes (:meth:`EpisodeSampler.episode`, :meth:`EpisodeSampler.batch`) depend only on the seed
and an index, so an evaluation over 600 test tasks is the same in every run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from mtl.errors import ConfigError, DatasetError

__all__ = ["Episode", "EpisodeSampler", "split_classes", "SPLITS"]

SPLITS = ("train", "val", "test")
"""The names of the three class splits made by :func:`split_classes`."""

_SPLIT_STREAM = 0
_EPISODE_STREAM = 1


def _integer(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _derived_seed(*parts: int) -> int:
    """A 64-bit seed mixing ``parts`` (numpy's SeedSequence hash): nearby inputs give unrelated
    streams."""
    state = np.random.SeedSequence(list(parts)).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def _class_list(name: str, classes: object) -> list[int]:
    """Validate a collection of class ids: non-empty, integers >= 0, no repeats."""
    if isinstance(classes, torch.Tensor):
        if classes.dim() != 1 or classes.is_floating_point() or classes.is_complex():
            raise ConfigError(
                f"{name} must be a 1-D integer tensor of class ids, got {classes.dtype} "
                f"with shape {tuple(classes.shape)}"
            )
        ids: list[Any] = classes.tolist()
    elif isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, range)):
        raise ConfigError(f"{name} must be a sequence of class ids, got {classes!r}")
    else:
        ids = list(classes)
    if not ids:
        raise ConfigError(f"{name} must hold at least one class id, got an empty sequence")
    bad = [c for c in ids if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0]
    if bad:
        raise ConfigError(f"{name} must hold integer class ids >= 0, got {bad[0]!r}")
    ids = [int(c) for c in ids]
    if len(set(ids)) != len(ids):
        repeated = next(c for c in ids if ids.count(c) > 1)
        raise ConfigError(f"{name} must not repeat a class id, got {repeated} more than once")
    return ids


def split_classes(
    classes: int | Sequence[int] | torch.Tensor,
    fractions: Sequence[float] | None = None,
    seed: int = 0,
    *,
    counts: Sequence[int] | None = None,
) -> dict[str, list[int]]:
    """Divide class ids at random into disjoint ``"train"``, ``"val"`` and ``"test"`` splits.

    Few-shot benchmarks (Vinyals et al. 2016) test on classes that never appear in training; this
    makes such a division, the same for the same arguments.

    Args:
        classes: the class ids, or a count ``n`` meaning ids ``0..n-1``.
        fractions: shares of the classes ``(train, val, test)``, each ``>= 0``, summing to 1
            (default ``(0.6, 0.2, 0.2)``); sizes are rounded by largest remainder, so they add up
            to the number of classes.  A split may come out empty when there are few classes.
        seed: seeds the shuffle (``>= 0``).
        counts: exact sizes ``(train, val, test)`` instead of ``fractions`` (each ``>= 0``, at
            most the number of classes in total; classes left over are in no split).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each list sorted.
    """
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        ids = list(range(_integer("classes", classes, 1)))
    else:
        ids = _class_list("classes", classes)
    seed = _integer("seed", seed, 0)
    n = len(ids)
    if counts is not None:
        if fractions is not None:
            raise ConfigError("give either fractions or counts, not both")
        sizes = _triple("counts", counts)
        if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0 for c in sizes):
            raise ConfigError(
                f"counts must be three integers >= 0 (train, val, test), got {counts!r}"
            )
        sizes = [int(c) for c in sizes]
        if sum(sizes) > n:
            raise ConfigError(
                f"counts {tuple(sizes)} add up to {sum(sizes)}, more than the {n} classes available"
            )
    else:
        shares = _triple("fractions", (0.6, 0.2, 0.2) if fractions is None else fractions)
        ok = all(
            not isinstance(f, bool) and isinstance(f, (int, float, np.number)) and math.isfinite(f)
            for f in shares
        )
        if not ok or any(f < 0 for f in shares) or abs(sum(shares) - 1.0) > 1e-6:
            total = f"{sum(shares):.6g}" if ok else "not finite"
            raise ConfigError(
                f"fractions must be three numbers >= 0 summing to 1 (train, val, test), "
                f"got {tuple(fractions or ())} (sum {total})"
            )
        exact = [float(f) * n for f in shares]
        sizes = [math.floor(x) for x in exact]
        by_remainder = sorted(range(3), key=lambda k: (-(exact[k] - sizes[k]), k))
        for k in by_remainder[: n - sum(sizes)]:
            sizes[k] += 1
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(n)
    shuffled = [ids[i] for i in order]
    out: dict[str, list[int]] = {}
    start = 0
    for name, size in zip(SPLITS, sizes):
        out[name] = sorted(shuffled[start : start + size])
        start += size
    return out


def _triple(name: str, value: object) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ConfigError(f"{name} must be three values (train, val, test), got {value!r}")
    items = list(value)
    if len(items) != 3:
        raise ConfigError(
            f"{name} must be three values (train, val, test), got {len(items)}: {value!r}"
        )
    return items


@dataclass
class Episode:
    """One N-way K-shot Q-query task, or a batch of ``B`` such tasks.

    Single task (from :meth:`EpisodeSampler.sample` / :meth:`EpisodeSampler.episode`):

    * ``support_x`` ``[N*K, C, H, W]``, ``support_y`` ``[N*K]``;
    * ``query_x`` ``[N*Q, C, H, W]``, ``query_y`` ``[N*Q]``;
    * ``classes`` ``[N]``: the original class id of each episode label.

    Batched (from :meth:`EpisodeSampler.sample_batch` / :meth:`EpisodeSampler.batch`): the same
    with a leading task dimension ``B`` (``classes`` ``[B, N]``).

    Labels are ``0..N-1`` and ``classes[label]`` is the class behind a label.  Samples are in
    label-major order: support sample ``j`` has label ``j // K`` and query sample ``j`` has label
    ``j // Q``, so ``support_x.reshape(N, K, C, H, W)`` groups the shots of each class.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor

    @property
    def is_batched(self) -> bool:
        """Whether the tensors have a leading task dimension."""
        return self.classes.dim() == 2

    @property
    def num_tasks(self) -> int:
        """``B`` for a batch, 1 for a single task."""
        return int(self.classes.shape[0]) if self.is_batched else 1

    @property
    def ways(self) -> int:
        """``N``, classes per task."""
        return int(self.classes.shape[-1])

    @property
    def shots(self) -> int:
        """``K``, support samples per class."""
        return int(self.support_y.shape[-1]) // self.ways

    @property
    def queries(self) -> int:
        """``Q``, query samples per class."""
        return int(self.query_y.shape[-1]) // self.ways

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Episode:
        """The same episode with every tensor moved to ``device``."""
        return Episode(
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in fields(self)
            }
        )

    def __getitem__(self, index: int) -> Episode:
        """Task ``index`` of a batch, as a single (unbatched) episode."""
        if not self.is_batched:
            raise TypeError("a single episode cannot be indexed; only a batch of episodes can")
        if not -self.num_tasks <= index < self.num_tasks:
            raise IndexError(f"task {index} is out of range for a batch of {self.num_tasks}")
        return Episode(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def unbatch(self) -> list[Episode]:
        """The tasks of a batch as a list of single episodes."""
        return [self[i] for i in range(self.num_tasks)]

    @staticmethod
    def stack(episodes: Sequence[Episode]) -> Episode:
        """Stack single episodes of equal ways / shots / queries / image shape into a batch."""
        if not episodes or any(e.is_batched for e in episodes):
            raise ConfigError("Episode.stack needs one or more single (unbatched) episodes")
        return Episode(
            **{f.name: torch.stack([getattr(e, f.name) for e in episodes]) for f in fields(Episode)}
        )

    def __repr__(self) -> str:
        batch = f"tasks={self.num_tasks}, " if self.is_batched else ""
        return (
            f"Episode({batch}ways={self.ways}, shots={self.shots}, queries={self.queries}, "
            f"image={tuple(self.support_x.shape[-3:])}, device={self.support_x.device})"
        )


class EpisodeSampler:
    """Draws N-way K-shot Q-query episodes (Vinyals et al. 2016; Snell et al. 2017).

    Args:
        dataset: a :class:`~mtl.data.base.LabelledImages` (its ``images`` tensor is indexed
            directly), or any object with a ``targets`` sequence / tensor of class ids and items
            ``dataset[i]`` that are images or ``(image, label)`` pairs.
        ways: classes per episode ``N`` (``1..number of classes``).
        shots: support samples per class ``K`` (``>= 1``).
        queries: query samples per class ``Q`` (``>= 0``); ``shots + queries`` must not exceed
            the smallest class.
        classes: the class ids episodes are drawn from, e.g. one split of :func:`split_classes`
            (default: every class present in ``dataset``).
        seed: seeds the sampler's generator and the fixed episodes (``>= 0``).
        split: a name for ``classes`` used in error messages (e.g. ``"test"``).

    Random episodes (:meth:`sample`, :meth:`sample_batch`, iteration) advance the sampler's own
    ``torch.Generator``; the same seed gives the same sequence and the global RNG is neither
    used nor changed.  Fixed episodes (:meth:`episode`, :meth:`batch`, :meth:`fixed_batches`)
    depend only on ``(seed, index)`` and the sampler's settings.

    Example::

        splits = split_classes(data.num_classes)
        train = EpisodeSampler(data, ways=5, shots=1, queries=15, classes=splits["train"])
        batch = train.sample_batch(32)                      # support_x [32, 5, 1, 28, 28]
        test = EpisodeSampler(data, 5, 1, 15, classes=splits["test"], split="test")
        for episodes in test.fixed_batches(600, 50): ...    # the same 600 tasks every run
    """

    def __init__(
        self,
        dataset: Any,
        ways: int,
        shots: int,
        queries: int,
        classes: Sequence[int] | torch.Tensor | None = None,
        seed: int = 0,
        *,
        split: str | None = None,
    ) -> None:
        self.ways = _integer("ways", ways, 1)
        self.shots = _integer("shots", shots, 1)
        self.queries = _integer("queries", queries, 0)
        self.seed = _integer("seed", seed, 0)
        self.dataset = dataset
        self.split = split
        targets = getattr(dataset, "targets", None)
        if targets is None:
            raise DatasetError(
                "dataset must have a 'targets' attribute of class ids, got "
                f"{type(dataset).__name__}"
            )
        targets = torch.as_tensor(targets)
        if targets.dim() != 1 or targets.is_floating_point() or targets.is_complex():
            raise DatasetError(
                f"dataset.targets must be a 1-D integer tensor, got {targets.dtype} with shape "
                f"{tuple(targets.shape)}"
            )
        targets = targets.long().cpu()
        if len(targets) == 0:
            raise DatasetError("dataset has no samples; episodes need at least one class")
        images = getattr(dataset, "images", None)
        self._images = images if isinstance(images, torch.Tensor) else None
        if self._images is not None and self._images.shape[0] != len(targets):
            raise DatasetError(
                f"dataset.images has {self._images.shape[0]} samples but dataset.targets has "
                f"{len(targets)}"
            )
        if classes is None:
            ids = torch.unique(targets)
        else:
            ids = torch.tensor(_class_list("classes", classes), dtype=torch.long)
        if split:
            where = f"split {split!r}"
        else:
            where = "the dataset" if classes is None else "the given classes"
        self.classes = ids
        n_cls = len(ids)
        if self.ways > n_cls:
            raise DatasetError(
                f"ways={self.ways} is more than the {n_cls} classes of {where}; "
                f"allowed: 1..{n_cls}"
            )
        # Per-class sample indices, padded to the largest class: [classes, largest].
        order = torch.argsort(targets, stable=True)
        ordered = targets[order]
        starts = torch.searchsorted(ordered, ids)
        sizes = torch.searchsorted(ordered, ids, right=True) - starts
        smallest = int(sizes.argmin())
        need = self.shots + self.queries
        if need > int(sizes[smallest]):
            cid = int(ids[smallest])
            names = getattr(dataset, "class_names", None)
            label = f"class {cid}"
            if isinstance(names, Sequence) and cid < len(names):
                label += f" ({names[cid]!r})"
            raise DatasetError(
                f"shots + queries = {need} is more than the {int(sizes[smallest])} samples of "
                f"{label}, the smallest of the {n_cls} classes of {where}; allowed: shots + "
                f"queries <= {int(sizes[smallest])}"
            )
        slot = torch.arange(int(sizes.max()))
        index = order[(starts[:, None] + slot).clamp(max=len(targets) - 1)]
        self._pad = slot[None, :] >= sizes[:, None]
        self._index = index.masked_fill(self._pad, 0)
        self._sizes = sizes
        self.generator = torch.Generator().manual_seed(self.seed)
        self._support_y = torch.arange(self.ways).repeat_interleave(self.shots)
        self._query_y = torch.arange(self.ways).repeat_interleave(self.queries)

    @property
    def num_classes(self) -> int:
        """How many classes episodes are drawn from."""
        return len(self.classes)

    def __repr__(self) -> str:
        where = f", split={self.split!r}" if self.split else ""
        return (
            f"EpisodeSampler(ways={self.ways}, shots={self.shots}, queries={self.queries}, "
            f"classes={self.num_classes}{where}, seed={self.seed})"
        )

    # -- drawing ---------------------------------------------------------------------------

    def _keys(self, num_tasks: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Uniform keys: one per (task, class), one per (task, way, class slot)."""
        class_keys = torch.rand(num_tasks, self.num_classes, generator=generator)
        sample_keys = torch.rand(num_tasks, self.ways, self._index.shape[1], generator=generator)
        return class_keys, sample_keys

    def _assemble(self, class_keys: torch.Tensor, sample_keys: torch.Tensor) -> Episode:
        """A batched episode from random keys: the ``ways`` smallest class keys pick the classes
        (in label order), the ``shots + queries`` smallest sample keys of each picked class pick
        its samples (support first)."""
        num_tasks = class_keys.shape[0]
        chosen = class_keys.topk(self.ways, dim=1, largest=False).indices  # [B, N]
        sample_keys = sample_keys.masked_fill(self._pad[chosen], 2.0)  # padding never wins
        need = self.shots + self.queries
        slots = sample_keys.topk(need, dim=2, largest=False).indices  # [B, N, K+Q]
        picked = self._index[chosen[..., None], slots]  # dataset indices [B, N, K+Q]
        support = picked[..., : self.shots].reshape(num_tasks, -1)
        query = picked[..., self.shots :].reshape(num_tasks, -1)
        support_x, query_x = self._gather(support), self._gather(query)
        device = support_x.device
        return Episode(
            support_x=support_x,
            support_y=self._support_y.repeat(num_tasks, 1).to(device),
            query_x=query_x,
            query_y=self._query_y.repeat(num_tasks, 1).to(device),
            classes=self.classes[chosen].to(device),
        )

    def _gather(self, index: torch.Tensor) -> torch.Tensor:
        """Images at dataset indices ``index`` ``[B, M]`` -> ``[B, M, *image_shape]``."""
        if self._images is not None:
            return self._images[index.to(self._images.device)]
        flat = []
        for i in index.reshape(-1).tolist():
            item = self.dataset[i]
            flat.append(torch.as_tensor(item[0] if isinstance(item, tuple) else item))
        if not flat:  # no queries: learn the image shape from one sample
            item = self.dataset[int(self._index[0, 0])]
            shape = torch.as_tensor(item[0] if isinstance(item, tuple) else item).shape
            return torch.empty(*index.shape, *shape)
        return torch.stack(flat).reshape(*index.shape, *flat[0].shape)

    def sample(self) -> Episode:
        """A random single episode from the sampler's generator."""
        return self.sample_batch(1)[0]

    def sample_batch(self, num_tasks: int) -> Episode:
        """``num_tasks`` random episodes stacked into a batch (``support_x`` ``[B, N*K, ...]``)."""
        num_tasks = _integer("num_tasks", num_tasks, 1)
        return self._assemble(*self._keys(num_tasks, self.generator))

    def _fixed(self, indices: Sequence[int]) -> Episode:
        keys = []
        for i in indices:
            generator = torch.Generator().manual_seed(_derived_seed(self.seed, _EPISODE_STREAM, i))
            keys.append(self._keys(1, generator))
        return self._assemble(torch.cat([k[0] for k in keys]), torch.cat([k[1] for k in keys]))

    def episode(self, index: int) -> Episode:
        """Fixed episode number ``index`` (``>= 0``): the same for the same seed and settings,
        whatever was sampled before.  ``episode(i)`` equals ``batch(i // B, B)[i % B]``."""
        return self._fixed([_integer("index", index, 0)])[0]

    def batch(self, index: int, num_tasks: int) -> Episode:
        """Fixed batch number ``index``: episodes ``index * num_tasks .. (index + 1) * num_tasks
        - 1``, stacked (so ``batch(i, B)[j]`` equals ``episode(i * B + j)``)."""
        index = _integer("index", index, 0)
        num_tasks = _integer("num_tasks", num_tasks, 1)
        return self._fixed(range(index * num_tasks, (index + 1) * num_tasks))

    def fixed_batches(self, num_episodes: int, num_tasks: int) -> Iterator[Episode]:
        """Fixed episodes ``0..num_episodes-1`` in batches of ``num_tasks`` (the last one may be
        smaller): a reproducible evaluation set, e.g. ``fixed_batches(600, 50)``."""
        num_episodes = _integer("num_episodes", num_episodes, 1)
        num_tasks = _integer("num_tasks", num_tasks, 1)
        for start in range(0, num_episodes, num_tasks):
            yield self._fixed(range(start, min(start + num_tasks, num_episodes)))

    def __iter__(self) -> Iterator[Episode]:
        """Endless random single episodes (``itertools.islice`` it, or zip it with a loop)."""
        while True:
            yield self.sample()

    def state_dict(self) -> dict[str, Any]:
        """The generator state, so that a resumed run continues the same sequence of episodes."""
        return {"seed": self.seed, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
