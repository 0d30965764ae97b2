"""Multi-task problems: the MMoE synthetic regression, Omniglot character + alphabet, and two-object sets.

Each builder returns a :class:`MultiTaskProblem`: the task specs plus train / val / test
:class:`~mtl.multitask.tasks.MultiTaskData`, deterministic by seed.

- :func:`mmoe_synthetic`: the two-task regression of Ma et al. (2018), section 3.2, whose task
  correlation ``p`` is set by the angle between the tasks' weight vectors.
- :func:`omniglot_multitask`: character and alphabet classification of the same Omniglot images
  (Lake et al. 2015), held-out drawers as test set.
- :func:`glyph_multitask`: the same idea on the built-in glyphs (glyph class and stroke count).
- :func:`overlay_pairs`, :func:`multi_omniglot`, :func:`multi_glyphs`: two overlapping characters,
  one task per position, in the style of MultiMNIST (Sabour et al. 2017; Sener and Koltun 2018).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtl.data.base import LabelledImages
from mtl.data.glyphs import make_glyphs
from mtl.data.omniglot import drawer_split, load_omniglot
from mtl.errors import ConfigError
from mtl.multitask.tasks import MultiTaskData, TaskSpec

__all__ = [
    "DATASETS",
    "MultiTaskProblem",
    "glyph_multitask",
    "load_problem",
    "mmoe_synthetic",
    "multi_glyphs",
    "multi_omniglot",
    "omniglot_multitask",
    "overlay_pairs",
]

DATASETS: tuple[str, ...] = ("synthetic", "glyphs", "omniglot", "multi-glyphs", "multi-omniglot")
"""Names accepted by :func:`load_problem` (and ``mtlmeta multitask --dataset``)."""


@dataclass
class MultiTaskProblem:
    """Task specs with train, validation and test data, plus a description."""

    name: str
    tasks: list[TaskSpec]
    train: MultiTaskData
    val: MultiTaskData
    test: MultiTaskData
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input."""
        return self.train.input_shape

    def summary(self) -> dict[str, Any]:
        """Sizes and tasks, JSON-friendly."""
        return {
            "name": self.name,
            "tasks": {t.name: {"kind": t.kind, "outputs": t.num_outputs, "metric": t.metric_name} for t in self.tasks},
            "input_shape": list(self.input_shape),
            "samples": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            **self.info,
        }


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_sine_regression_args(num_train: int, num_val: int, num_test: int, input_dim: int, min_input_dim: int,
                               num_sines: int, scale: float, noise_std: float, seed: int) -> None:
    """Validate the settings shared by the sine-regression generators (Ma et al. 2018)."""
    for name, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1), ("num_test", num_test, 1),
                             ("input_dim", input_dim, min_input_dim), ("num_sines", num_sines, 0), ("seed", seed, 0)):
        _int(name, value, low)
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a finite number > 0, got {scale!r}")
    if not (isinstance(noise_std, (int, float)) and math.isfinite(noise_std) and noise_std >= 0):
        raise ConfigError(f"noise_std must be a finite number >= 0, got {noise_std!r}")


def sine_regression_labels(z: np.ndarray, alpha: np.ndarray, beta: np.ndarray, noise_std: float,
                           rng: np.random.Generator) -> np.ndarray:
    """``y = z + sum_i sin(alpha_i z + beta_i) + eps`` for projections ``z = w^T x`` (Ma et al. 2018)."""
    return z + np.sin(np.outer(z, alpha) + beta).sum(1) + noise_std * rng.standard_normal(len(z))


def split_regression_problem(name: str, tasks: list[TaskSpec], data: MultiTaskData, num_train: int, num_val: int,
                             info: dict[str, Any]) -> MultiTaskProblem:
    """The first ``num_train`` samples train, the next ``num_val`` validate, the rest test."""
    cut, total = [num_train, num_train + num_val], len(data.inputs)
    return MultiTaskProblem(
        name, tasks, data.select(torch.arange(0, cut[0])), data.select(torch.arange(cut[0], cut[1])),
        data.select(torch.arange(cut[1], total)), info,
    )


def mmoe_synthetic(
    correlation: float = 0.5,
    num_train: int = 8000,
    num_val: int = 1000,
    num_test: int = 2000,
    input_dim: int = 100,
    num_sines: int = 10,
    scale: float = 1.0,
    noise_std: float = 0.1,
    seed: int = 0,
) -> MultiTaskProblem:
    """Synthetic two-task regression with controllable task correlation (Ma et al. 2018, section 3.2).

    Two orthonormal vectors ``u1, u2`` in ``R^d`` give the task weights ``w1 = c u1`` and
    ``w2 = c (p u1 + sqrt(1 - p^2) u2)``; inputs are ``x ~ N(0, I_d)`` and labels

        ``y_k = w_k^T x + sum_{i=1..m} sin(alpha_i w_k^T x + beta_i) + eps_k``,  ``eps_k ~ N(0, noise_std^2)``

    with ``alpha_i, beta_i`` shared by both tasks (drawn once from ``N(0, 1)``; the paper does not
    list its values). The cosine similarity of ``w1`` and ``w2`` is ``p``; the Pearson correlation
    of the labels is lower because of the sine terms, and is reported in ``info``. Ma et al. use
    ``d = 100``, ``m = 10`` and noise variance 0.01 (``noise_std = 0.1``).

    Args:
        correlation: ``p`` in ``[-1, 1]``.
        num_train: training samples.
        num_val: validation samples.
        num_test: test samples.
        input_dim: ``d``.
        num_sines: ``m``.
        scale: ``c``.
        noise_std: standard deviation of the label noise.
        seed: fixes ``u1, u2, alpha, beta`` and the samples.
    """
    if isinstance(correlation, bool) or not isinstance(correlation, (int, float)) or not -1.0 <= correlation <= 1.0:
        raise ConfigError(f"correlation must be a number in [-1, 1], got {correlation!r}")
    check_sine_regression_args(num_train, num_val, num_test, input_dim, 2, num_sines, scale, noise_std, seed)
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((input_dim, 2)))
    u1, u2 = basis[:, 0], basis[:, 1]
    w1 = scale * u1
    w2 = scale * (correlation * u1 + math.sqrt(max(0.0, 1.0 - correlation**2)) * u2)
    alpha = rng.standard_normal(num_sines)
    beta = rng.standard_normal(num_sines)
    total = num_train + num_val + num_test
    x = rng.standard_normal((total, input_dim))

    y1, y2 = (sine_regression_labels(x @ w, alpha, beta, noise_std, rng) for w in (w1, w2))
    xt = torch.from_numpy(x).float()
    targets = {"y1": torch.from_numpy(y1).float()[:, None], "y2": torch.from_numpy(y2).float()[:, None]}
    tasks = [TaskSpec("y1", 1, "regression"), TaskSpec("y2", 1, "regression")]
    return split_regression_problem(
        f"mmoe-synthetic(p={correlation:g})", tasks, MultiTaskData(xt, targets), num_train, num_val,
        {"correlation": float(correlation), "label_pearson": float(np.corrcoef(y1, y2)[0, 1]),
         "input_dim": input_dim, "num_sines": num_sines, "seed": seed},
    )


def _from_labelled(ds: LabelledImages, task_sources: dict[str, str]) -> MultiTaskData:
    targets = {name: ds.targets if src == "target" else ds.attributes[src] for name, src in task_sources.items()}
    return MultiTaskData(ds.images, targets)


def omniglot_multitask(
    root: str | os.PathLike,
    subsets: Sequence[str] = ("background_small1", "background_small2"),
    image_size: int = 28,
    test_drawers: Sequence[int] = (17, 18, 19, 20),
    val_drawers: Sequence[int] = (15, 16),
    label_fraction: float | None = None,
    seed: int = 0,
    **load_kwargs: Any,
) -> MultiTaskProblem:
    """Omniglot character and alphabet classification from the same images (Lake et al. 2015).

    Every character appears in every split; the test set is the drawings of held-out drawers
    (people), the validation set those of ``val_drawers``. With the two "small" background
    subsets that is 242 characters of 8 alphabets, 14 / 2 / 4 drawers for train / val / test.

    Args:
        root: folder with the official ``images_<subset>.zip`` files (see :func:`~mtl.data.load_omniglot`).
        subsets: Omniglot subsets to merge.
        image_size: side length after resizing.
        test_drawers: drawer numbers (1..20) of the test set.
        val_drawers: drawer numbers (1..20) of the validation set.
        label_fraction: keep only this fraction of each task's training labels (at random,
            independently per task; the rest are masked), or ``None`` for all.
        seed: for ``label_fraction``.
        load_kwargs: passed to :func:`~mtl.data.load_omniglot` (e.g. ``cache_dir``).
    """
    ds = load_omniglot(root, subsets=tuple(subsets), image_size=image_size, **load_kwargs)
    masks = drawer_split(ds, list(test_drawers), list(val_drawers))
    if not bool(masks["val"].any()):
        raise ConfigError("val_drawers must name at least one drawer (validation selects the model)")
    sources = {"character": "target", "alphabet": "alphabet"}
    parts = {k: _from_labelled(ds.select(m), sources) for k, m in masks.items()}
    tasks = [TaskSpec("character", ds.num_classes), TaskSpec("alphabet", len(ds.attribute_names["alphabet"]))]
    train = parts["train"]
    if label_fraction is not None:
        if not (isinstance(label_fraction, (int, float)) and 0 < label_fraction <= 1):
            raise ConfigError(f"label_fraction must be in (0, 1], got {label_fraction!r}")
        train = train.drop_labels(1.0 - float(label_fraction), seed=seed)
    return MultiTaskProblem(
        "omniglot", tasks, train, parts["val"], parts["test"],
        {"subsets": list(subsets), "test_drawers": list(test_drawers), "val_drawers": list(val_drawers),
         "alphabets": ds.attribute_names["alphabet"]},
    )


def _sample_split(ds: LabelledImages, samples_per_class: int, val: int, test: int) -> dict[str, torch.Tensor]:
    """Split a class-major glyph set by sample index within each class (like held-out drawers)."""
    within = torch.arange(len(ds)) % samples_per_class
    n_train = samples_per_class - val - test
    if n_train < 1 or val < 1 or test < 1:
        raise ConfigError(f"samples_per_class={samples_per_class} is too small for {val} val and {test} test "
                          "samples per class")
    return {"train": within < n_train, "val": (within >= n_train) & (within < n_train + val),
            "test": within >= n_train + val}


def glyph_multitask(num_classes: int = 50, samples_per_class: int = 20, image_size: int = 28, seed: int = 0,
                    val_per_class: int = 2, test_per_class: int = 4) -> MultiTaskProblem:
    """Two tasks on the built-in glyphs (no file needed): glyph class and number of strokes (1-4).

    The per-class sample split mirrors :func:`omniglot_multitask`'s held-out drawers.
    """
    ds = make_glyphs(num_classes, samples_per_class, image_size, seed)
    masks = _sample_split(ds, samples_per_class, val_per_class, test_per_class)
    sources = {"glyph": "target", "strokes": "strokes"}
    parts = {k: _from_labelled(ds.select(m), sources) for k, m in masks.items()}
    tasks = [TaskSpec("glyph", num_classes), TaskSpec("strokes", len(ds.attribute_names["strokes"]))]
    return MultiTaskProblem("glyphs", tasks, parts["train"], parts["val"], parts["test"],
                            {"num_classes": num_classes, "seed": seed})


def overlay_pairs(source: LabelledImages, num_samples: int, seed: int = 0, max_shift: int = 4,
                  out_size: int | None = None) -> MultiTaskData:
    """Two overlapping characters per image, in the style of MultiMNIST (Sabour et al. 2017; Sener and Koltun 2018).

    Each sample draws two images of ``source`` at random; the first is placed in the top-left and
    the second in the bottom-right of a canvas ``2 * max_shift`` pixels larger than the images,
    each moved by up to ``max_shift`` pixels towards the centre, combined by a pixel-wise maximum
    and resized back to ``out_size`` (default: the source size), so the characters overlap
    heavily. Tasks ``"left"`` and ``"right"`` are their class ids (the source's).
    """
    _int("num_samples", num_samples, 1)
    _int("max_shift", max_shift, 0)
    _int("seed", seed, 0)
    if len(source) == 0:
        raise ConfigError("overlay_pairs needs a non-empty source set")
    _, h, w = source.image_shape
    out_size = out_size or h
    canvas_h, canvas_w = h + 2 * max_shift, w + 2 * max_shift
    gen = torch.Generator().manual_seed(seed)
    first = torch.randint(len(source), (num_samples,), generator=gen)
    second = torch.randint(len(source), (num_samples,), generator=gen)
    shifts = torch.randint(max_shift + 1, (num_samples, 4), generator=gen)
    canvas = torch.zeros(num_samples, 1, canvas_h, canvas_w)
    for i in range(num_samples):
        a, b = source.images[first[i]], source.images[second[i]]
        dy, dx, ey, ex = shifts[i].tolist()
        canvas[i, :, dy:dy + h, dx:dx + w] = a
        top, left = canvas_h - h - ey, canvas_w - w - ex
        canvas[i, :, top:top + h, left:left + w] = torch.maximum(canvas[i, :, top:top + h, left:left + w], b)
    images = F.interpolate(canvas, size=(out_size, out_size), mode="area") if (canvas_h, canvas_w) != (
        out_size, out_size) else canvas
    return MultiTaskData(images.clamp(0, 1), {"left": source.targets[first].clone(),
                                              "right": source.targets[second].clone()})


def _relabel(ds: LabelledImages, classes: Sequence[int]) -> LabelledImages:
    sub = ds.with_classes(classes)
    lookup = torch.full((ds.num_classes,), -1, dtype=torch.long)
    lookup[torch.as_tensor(list(classes))] = torch.arange(len(classes))
    return LabelledImages(sub.images, lookup[sub.targets], [ds.class_names[c] for c in classes])


def _overlay_problem(name: str, parts: dict[str, LabelledImages], num_classes: int, sizes: Sequence[int],
                     seed: int, max_shift: int, info: dict[str, Any]) -> MultiTaskProblem:
    data = {k: overlay_pairs(parts[k], n, seed=seed * 3 + i, max_shift=max_shift)
            for i, (k, n) in enumerate(zip(("train", "val", "test"), sizes))}
    tasks = [TaskSpec("left", num_classes), TaskSpec("right", num_classes)]
    return MultiTaskProblem(name, tasks, data["train"], data["val"], data["test"], info)


def multi_omniglot(root: str | os.PathLike, num_classes: int = 10, sizes: Sequence[int] = (6000, 1000, 2000),
                   subsets: Sequence[str] = ("background_small1", "background_small2"), seed: int = 0,
                   max_shift: int = 4, test_drawers: Sequence[int] = (17, 18, 19, 20),
                   val_drawers: Sequence[int] = (15, 16), **load_kwargs: Any) -> MultiTaskProblem:
    """MultiMNIST-style pairs of Omniglot characters (Sener and Koltun 2018's two-digit set, with characters).

    ``num_classes`` characters are picked at random (by ``seed``); train pairs are built from the
    training drawers' images only and test pairs from the held-out drawers', so test images are
    new drawings. ``sizes`` gives the number of train / val / test pairs.
    """
    _int("num_classes", num_classes, 2)
    ds = load_omniglot(root, subsets=tuple(subsets), image_size=28, **load_kwargs)
    if num_classes > ds.num_classes:
        raise ConfigError(f"num_classes={num_classes} but the Omniglot subsets hold {ds.num_classes} characters")
    classes = sorted(torch.randperm(ds.num_classes, generator=torch.Generator().manual_seed(seed))[:num_classes]
                     .tolist())
    masks = drawer_split(ds, list(test_drawers), list(val_drawers))
    parts = {k: _relabel(ds.select(m), classes) for k, m in masks.items()}
    return _overlay_problem("multi-omniglot", parts, num_classes, sizes, seed, max_shift,
                            {"characters": [ds.class_names[c] for c in classes]})


def multi_glyphs(num_classes: int = 10, sizes: Sequence[int] = (6000, 1000, 2000), samples_per_class: int = 20,
                 seed: int = 0, max_shift: int = 4) -> MultiTaskProblem:
    """MultiMNIST-style pairs of built-in glyphs; test pairs use held-out redraws of each glyph."""
    _int("num_classes", num_classes, 2)
    ds = make_glyphs(num_classes, samples_per_class, 28, seed)
    masks = _sample_split(ds, samples_per_class, 2, 4)
    parts = {k: ds.select(m) for k, m in masks.items()}
    return _overlay_problem("multi-glyphs", parts, num_classes, sizes, seed, max_shift, {"num_classes": num_classes})


def load_problem(name: str, root: str | os.PathLike | None = None, **options: Any) -> MultiTaskProblem:
    """Build the problem ``name`` (one of :data:`DATASETS`); ``root`` is needed for the Omniglot ones."""
    builders = {"synthetic": mmoe_synthetic, "glyphs": glyph_multitask, "omniglot": omniglot_multitask,
                "multi-glyphs": multi_glyphs, "multi-omniglot": multi_omniglot}
    if name not in builders:
        raise ConfigError(f"unknown multi-task dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name in ("omniglot", "multi-omniglot"):
        if root is None:
            raise ConfigError(f"dataset {name!r} needs --root, the folder with images_background_small1.zip etc.")
        return builders[name](root, **options)
    return builders[name](**options)
