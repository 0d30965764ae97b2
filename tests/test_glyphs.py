"""Procedural glyphs: shapes, value range, determinism, consistency of classes and samples."""

from __future__ import annotations

import pytest
import torch

from mtl.data.base import LabelledImages
from mtl.data.episodes import EpisodeSampler
from mtl.data.glyphs import MAX_STROKES, make_glyphs
from mtl.errors import ConfigError


@pytest.fixture(scope="module")
def glyphs() -> LabelledImages:
    return make_glyphs(30, 6, seed=0)


def test_shapes_types_and_labels(glyphs):
    assert isinstance(glyphs, LabelledImages)
    assert glyphs.images.shape == (180, 1, 28, 28)
    assert glyphs.images.dtype == torch.float32
    assert torch.equal(glyphs.targets, torch.arange(30).repeat_interleave(6))
    assert glyphs.class_names[:3] == ["glyph0000", "glyph0001", "glyph0002"]
    assert glyphs.num_classes == 30
    strokes = glyphs.attributes["strokes"]
    assert strokes.shape == (180,) and 0 <= int(strokes.min()) and int(strokes.max()) < MAX_STROKES
    assert glyphs.attribute_names["strokes"] == ["1", "2", "3", "4"]
    # one stroke count per class
    assert (strokes.reshape(30, 6) == strokes.reshape(30, 6)[:, :1]).all()


def test_value_range_and_convention(glyphs):
    images = glyphs.images
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    # bright strokes on a dark background: mostly 0, every drawing reaches (almost) full ink
    per_image_max = images.flatten(1).max(dim=1).values
    assert float(per_image_max.min()) > 0.6
    ink = images.flatten(1).mean(dim=1)
    assert 0.01 < float(ink.min()) and float(ink.max()) < 0.4
    assert float((images == 0).float().mean()) > 0.5
    # the border is (nearly) always empty: drawings sit inside the canvas
    edges = [images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]]
    border = torch.cat(edges)
    assert float(border.mean()) < 0.02


def test_deterministic_by_seed():
    a, b = make_glyphs(4, 3, seed=5), make_glyphs(4, 3, seed=5)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, make_glyphs(4, 3, seed=6).images)


def test_class_consistent_across_num_classes_and_offset():
    small = make_glyphs(3, 4, seed=1)
    large = make_glyphs(70, 4, seed=1)  # more than one rendering chunk
    assert torch.equal(small.images, large.images[:12])
    shifted = make_glyphs(2, 4, seed=1, class_offset=65)
    assert torch.equal(shifted.images, large.images[65 * 4 : 67 * 4])
    assert shifted.class_names == ["glyph0065", "glyph0066"]
    assert torch.equal(shifted.targets, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))


def test_sample_depends_only_on_its_index():
    few = make_glyphs(3, 2, seed=2).images.reshape(3, 2, 1, 28, 28)
    many = make_glyphs(3, 9, seed=2).images.reshape(3, 9, 1, 28, 28)
    assert torch.equal(few, many[:, :2])


def test_samples_are_jittered_redraws(glyphs):
    images = glyphs.images.reshape(30, 6, -1)
    assert float((images[:, 0] - images[:, 1]).abs().mean()) > 0.005  # redraws differ ...
    # ... but resemble their own character: nearest class mean of the other five redraws
    centroids = images[:, 1:].mean(dim=1)
    predicted = torch.cdist(images[:, 0], centroids).argmin(dim=1)
    assert float((predicted == torch.arange(30)).float().mean()) > 0.5
    exact = make_glyphs(2, 3, jitter=0.0).images
    assert torch.equal(exact[0], exact[1]) and torch.equal(exact[0], exact[2])
    assert not torch.equal(exact[0], exact[3])


def test_other_sizes_and_stroke_width():
    big = make_glyphs(2, 2, image_size=64)
    assert big.images.shape == (4, 1, 64, 64)
    # the same drawing at two sizes: the downsampled large one resembles the small one
    small = make_glyphs(2, 2, image_size=32).images
    pooled = torch.nn.functional.avg_pool2d(big.images, 2)
    correlation = torch.corrcoef(torch.stack([pooled.flatten(), small.flatten()]))[0, 1]
    assert float(correlation) > 0.9
    # strokes scale with the image: the same share of ink, full brightness at every size
    assert 0.8 < float(big.images.mean() / small.mean()) < 1.25
    assert float(big.images.flatten(1).max(dim=1).values.min()) > 0.9
    thin = make_glyphs(2, 2, stroke_width=0.5).images.mean()
    bold = make_glyphs(2, 2, stroke_width=2.0).images.mean()
    assert float(bold) > float(thin)


def test_nearest_neighbour_accuracy_is_between_chance_and_perfect():
    """Non-trivial but learnable: pixel-space 1-NN on 5-way 1-shot is far from 20% and 100%."""
    data = make_glyphs(200, 2, seed=0)
    sampler = EpisodeSampler(data, ways=5, shots=1, queries=1, seed=0)
    correct = total = 0
    for batch in sampler.fixed_batches(600, 200):
        support = batch.support_x.flatten(2)
        query = batch.query_x.flatten(2)
        pred = torch.cdist(query, support).argmin(dim=2)
        correct += int((pred == batch.query_y).sum())
        total += batch.query_y.numel()
    accuracy = correct / total
    assert 0.4 < accuracy < 0.85, accuracy


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, r"num_classes must be an integer >= 1, got 0"),
        ({"num_classes": 2.5}, r"num_classes must be an integer >= 1, got 2.5"),
        ({"num_classes": True}, r"num_classes must be an integer >= 1, got True"),
        ({"samples_per_class": 0}, r"samples_per_class must be an integer >= 1, got 0"),
        ({"image_size": 4}, r"image_size must be an integer >= 8, got 4"),
        ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
        ({"class_offset": -3}, r"class_offset must be an integer >= 0, got -3"),
        ({"jitter": -0.1}, r"jitter must be a finite number >= 0, got -0.1"),
        ({"jitter": float("nan")}, r"jitter must be a finite number >= 0, got nan"),
        ({"stroke_width": 0}, r"stroke_width must be a finite number > 0, got 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"num_classes": 2, "samples_per_class": 2} | kwargs
    with pytest.raises(ConfigError, match=match):
        make_glyphs(**args)
