"""Multi-task problems with known task relations for task-affinity studies, and a loader by name.

- :func:`~mtl.affinity.synthetic.correlated_regression` (``"correlated"``): ``T`` regression
  tasks with a given correlation matrix (Ma et al. 2018's construction, generalised).
- :func:`sides_tasks` (``"omniglot-sides"``, ``"glyph-sides"``): two overlapping characters per
  image in the style of MultiMNIST (Sabour et al. 2017), with four tasks: the class and a coarse
  attribute (Omniglot's alphabet, the glyphs' stroke count) of the left and of the right
  character. Tasks about the same character are related, tasks about different characters are
  independent by construction.
- Any name of :data:`mtl.multitask.data.DATASETS` (via :func:`~mtl.multitask.data.load_problem`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from mtl.affinity.synthetic import correlated_regression
from mtl.data.base import LabelledImages
from mtl.data.glyphs import make_glyphs
from mtl.data.omniglot import drawer_split, load_omniglot
from mtl.errors import ConfigError
from mtl.multitask.data import DATASETS as MULTITASK_DATASETS
from mtl.multitask.data import MultiTaskProblem, load_problem, overlay_pairs
from mtl.multitask.tasks import MultiTaskData, TaskSpec

__all__ = [
    "AFFINITY_DATASETS",
    "default_backbone",
    "glyph_sides",
    "load_affinity_problem",
    "omniglot_sides",
    "sides_tasks",
]

AFFINITY_DATASETS: tuple[str, ...] = ("correlated", "omniglot-sides", "glyph-sides", *MULTITASK_DATASETS)
"""Names accepted by :func:`load_affinity_problem` (and ``mtlmeta affinity --dataset``)."""


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _with_attribute(pairs: MultiTaskData, class_to_attr: torch.Tensor, attr: str, cls: str) -> MultiTaskData:
    left, right = pairs.targets["left"], pairs.targets["right"]
    return MultiTaskData(pairs.inputs, {f"left_{cls}": left, f"left_{attr}": class_to_attr[left],
                                        f"right_{cls}": right, f"right_{attr}": class_to_attr[right]})


def sides_tasks(parts: dict[str, LabelledImages], attribute: str, sizes: Sequence[int] = (3000, 500, 1000),
                seed: int = 0, max_shift: int = 4, name: str = "sides", class_label: str = "char"
                ) -> MultiTaskProblem:
    """Four tasks on two overlapping characters: class and ``attribute`` of the left and of the right one.

    Pairs are drawn with :func:`~mtl.multitask.data.overlay_pairs` (MultiMNIST-style, Sabour et
    al. 2017) separately from the ``"train"``, ``"val"`` and ``"test"`` image sets, so test pairs
    are made of unseen drawings. The tasks are ``left_<class_label>``, ``left_<attribute>``,
    ``right_<class_label>``, ``right_<attribute>``; the attribute must be a function of the
    class (checked). Known relations: the two tasks of one side concern the same character
    (the attribute is even determined by the class), the two sides are drawn independently.

    Args:
        parts: ``{"train", "val", "test"}`` image sets with the same class ids and an integer
            attribute ``attribute``; class ids must be ``0..C-1``.
        attribute: name of the per-sample attribute (e.g. ``"alphabet"``).
        sizes: number of train / val / test pairs.
        seed: as in :func:`~mtl.multitask.data.overlay_pairs`.
        max_shift: as in :func:`~mtl.multitask.data.overlay_pairs`.
        name: the problem's name.
        class_label: the name of the class tasks' suffix.
    """
    if sorted(parts) != ["test", "train", "val"]:
        raise ConfigError(f"parts must be the train, val and test sets, got {sorted(parts)}")
    if len(sizes) != 3:
        raise ConfigError(f"sizes must give train, val and test pair counts, got {list(sizes)!r}")
    for what, n in zip(("train", "val", "test"), sizes):
        _int(f"sizes[{what}]", n, 1)
    num_classes = max(p.num_classes for p in parts.values())
    class_to_attr = torch.full((num_classes,), -1, dtype=torch.long)
    for part in parts.values():
        if attribute not in part.attributes:
            raise ConfigError(f"the image sets have no attribute {attribute!r}; they have {sorted(part.attributes)}")
        values = part.attributes[attribute].long()
        known = class_to_attr[part.targets]
        if bool(((known >= 0) & (known != values)).any()):
            raise ConfigError(f"attribute {attribute!r} is not a function of the class")
        class_to_attr[part.targets] = values
    present = class_to_attr >= 0
    if not bool(present.all()):
        raise ConfigError(f"classes {torch.nonzero(~present).flatten().tolist()} have no image")
    values = torch.unique(class_to_attr)
    relabel = torch.full((int(values.max()) + 1,), -1, dtype=torch.long)
    relabel[values] = torch.arange(len(values))
    class_to_attr = relabel[class_to_attr]
    data = {k: _with_attribute(overlay_pairs(parts[k], n, seed=seed * 3 + i, max_shift=max_shift),
                               class_to_attr, attribute, class_label)
            for i, (k, n) in enumerate(zip(("train", "val", "test"), sizes))}
    tasks = [TaskSpec(f"left_{class_label}", num_classes), TaskSpec(f"left_{attribute}", len(values)),
             TaskSpec(f"right_{class_label}", num_classes), TaskSpec(f"right_{attribute}", len(values))]
    return MultiTaskProblem(name, tasks, data["train"], data["val"], data["test"],
                            {"classes": num_classes, f"{attribute}_values": len(values), "seed": seed,
                             "related_pairs": [[tasks[0].name, tasks[1].name], [tasks[2].name, tasks[3].name]]})


def _select_classes(ds: LabelledImages, classes: Sequence[int]) -> LabelledImages:
    sub = ds.with_classes(classes)
    lookup = torch.full((ds.num_classes,), -1, dtype=torch.long)
    lookup[torch.as_tensor(list(classes))] = torch.arange(len(classes))
    return LabelledImages(sub.images, lookup[sub.targets], [ds.class_names[c] for c in classes],
                          dict(sub.attributes), sub.attribute_names)


def omniglot_sides(root: str | os.PathLike, num_alphabets: int = 4, chars_per_alphabet: int = 5,
                   sizes: Sequence[int] = (3000, 500, 1000), seed: int = 0, max_shift: int = 4,
                   subsets: Sequence[str] = ("background_small1", "background_small2"),
                   test_drawers: Sequence[int] = (17, 18, 19, 20), val_drawers: Sequence[int] = (15, 16),
                   **load_kwargs: Any) -> MultiTaskProblem:
    """Omniglot (Lake et al. 2015) pairs with four tasks: character and alphabet of the left and right character.

    ``chars_per_alphabet`` characters of each of ``num_alphabets`` alphabets are drawn at random
    (by ``seed``); train pairs use drawers other than ``test_drawers`` and ``val_drawers``, so
    test pairs are new drawings. See :func:`sides_tasks`.
    """
    _int("num_alphabets", num_alphabets, 2)
    _int("chars_per_alphabet", chars_per_alphabet, 1)
    ds = load_omniglot(root, subsets=tuple(subsets), image_size=28, **load_kwargs)
    class_alpha = torch.full((ds.num_classes,), -1, dtype=torch.long)
    class_alpha[ds.targets] = ds.attributes["alphabet"].long()
    n_alpha = len(ds.attribute_names["alphabet"])
    if num_alphabets > n_alpha:
        raise ConfigError(f"num_alphabets={num_alphabets} but the subsets hold {n_alpha} alphabets")
    gen = torch.Generator().manual_seed(seed)
    alphabets = sorted(torch.randperm(n_alpha, generator=gen)[:num_alphabets].tolist())
    classes: list[int] = []
    for a in alphabets:
        members = torch.nonzero(class_alpha == a).flatten()
        if len(members) < chars_per_alphabet:
            raise ConfigError(f"alphabet {ds.attribute_names['alphabet'][a]!r} has only {len(members)} characters, "
                              f"fewer than chars_per_alphabet={chars_per_alphabet}")
        pick = members[torch.randperm(len(members), generator=gen)[:chars_per_alphabet]]
        classes.extend(sorted(pick.tolist()))
    masks = drawer_split(ds, list(test_drawers), list(val_drawers))
    parts = {k: _select_classes(ds.select(m), classes) for k, m in masks.items()}
    problem = sides_tasks(parts, "alphabet", sizes, seed, max_shift, "omniglot-sides")
    problem.info["alphabets"] = [ds.attribute_names["alphabet"][a] for a in alphabets]
    return problem


def glyph_sides(num_classes: int = 12, samples_per_class: int = 20, sizes: Sequence[int] = (3000, 500, 1000),
                seed: int = 0, max_shift: int = 4) -> MultiTaskProblem:
    """Built-in glyph pairs (no file needed) with four tasks: glyph and stroke count (1-4) of each side.

    Samples ``0..samples_per_class-7`` of each glyph build train pairs, the next 2 val, the last 4 test
    (redraws never seen in training). See :func:`sides_tasks`.
    """
    _int("num_classes", num_classes, 2)
    _int("samples_per_class", samples_per_class, 7)
    ds = make_glyphs(num_classes, samples_per_class, 28, seed)
    within = torch.arange(len(ds)) % samples_per_class
    n_train = samples_per_class - 6
    masks = {"train": within < n_train, "val": (within >= n_train) & (within < n_train + 2),
             "test": within >= n_train + 2}
    parts = {k: ds.select(m) for k, m in masks.items()}
    return sides_tasks(parts, "strokes", sizes, seed, max_shift, "glyph-sides", class_label="glyph")


def load_affinity_problem(name: str, root: str | os.PathLike | None = None, **options: Any) -> MultiTaskProblem:
    """Build the problem ``name`` (one of :data:`AFFINITY_DATASETS`); ``root`` is needed for Omniglot ones."""
    if name == "correlated":
        return correlated_regression(**options)
    if name == "glyph-sides":
        return glyph_sides(**options)
    if name == "omniglot-sides":
        if root is None:
            raise ConfigError("dataset 'omniglot-sides' needs --root, the folder with images_background_small1.zip")
        return omniglot_sides(root, **options)
    if name in MULTITASK_DATASETS:
        return load_problem(name, root=root, **options)
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(AFFINITY_DATASETS)}")


def default_backbone(problem: MultiTaskProblem, backbone: str | None = None,
                     backbone_kwargs: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Backbone name and arguments fitting the problem's inputs: ``mlp`` (hidden 16) for vectors, else ``conv4``.

    Given ``backbone`` / ``backbone_kwargs`` are kept; only the input size arguments are filled in.
    """
    shape = problem.input_shape
    name = backbone or ("mlp" if len(shape) == 1 else "conv4")
    kwargs = dict(backbone_kwargs or {})
    if name == "mlp":
        kwargs.setdefault("in_features", int(torch.tensor(shape).prod()))
        if len(shape) == 1:
            kwargs.setdefault("hidden", [16])
    elif len(shape) == 3:
        kwargs.setdefault("in_channels", shape[0])
        kwargs.setdefault("image_size", shape[1])
    return name, kwargs
