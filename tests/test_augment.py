"""Image augmentations of mtl.data.augment and their use in few-shot training episodes."""

import math

import pytest
import torch

from meta.fewshot import _SHIFT_STREAM, _derived_seed, augmented_episode, shifted_episode
from mtl.data.augment import random_affine, random_shift
from mtl.data.episodes import EpisodeSampler
from mtl.data.glyphs import make_glyphs
from mtl.errors import ConfigError


def _bar(n: int, size: int = 29) -> torch.Tensor:
    """``n`` images of a thin horizontal bar through the centre pixel."""
    x = torch.zeros(n, 1, size, size)
    c = size // 2
    x[:, :, c, c - 8:c + 9] = 1.0
    return x


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ink centroid (column, row) about the image centre and the orientation of each image's ink."""
    _, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype) - (h - 1) / 2,
                            torch.arange(w, dtype=x.dtype) - (w - 1) / 2, indexing="ij")
    m = x[:, 0]
    mass = m.sum((1, 2))
    cx, cy = (m * xs).sum((1, 2)) / mass, (m * ys).sum((1, 2)) / mass
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    sxx, syy, sxy = (m * dx * dx).sum((1, 2)), (m * dy * dy).sum((1, 2)), (m * dx * dy).sum((1, 2))
    return cx, cy, 0.5 * torch.atan2(2 * sxy, sxx - syy)


def test_random_affine_rotates_by_the_drawn_angle_about_the_centre():
    x = _bar(40)
    y = random_affine(x, torch.Generator().manual_seed(3), degrees=30)
    drawn = (torch.rand(40, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1) * 30
    cx, cy, angle = _moments(y)
    assert cx.abs().max() < 0.05 and cy.abs().max() < 0.05  # about the centre: the bar's middle stays put
    # angles are measured in pixel coordinates (x to the right, y downwards)
    assert torch.allclose(torch.rad2deg(angle).double(), drawn, atol=1.0)
    assert drawn.abs().max() > 20  # the check above covered large angles, not only small ones


def test_random_affine_scales_and_shears_within_bounds():
    x = _bar(200)
    x[:, :, 12:17] = x[:, :, 14:15]  # 17 pixels wide, 5 high
    y = random_affine(x, torch.Generator().manual_seed(0), scale=0.2)
    g = torch.Generator().manual_seed(0)
    torch.rand(200, generator=g, dtype=torch.float64)  # the angles (all 0 here)
    sx, sy = (1 + (torch.rand(200, generator=g, dtype=torch.float64) * 2 - 1) * 0.2 for _ in range(2))
    width = (y[:, 0].amax(1) > 0.5).sum(-1).double()
    height = (y[:, 0].amax(2) > 0.5).sum(-1).double()
    assert (width - 17 * sx).abs().max() <= 1.5 and (height - 5 * sy).abs().max() <= 1.5
    assert sx.min() < 0.85 and sx.max() > 1.15
    line = _bar(50)
    sheared = random_affine(line, torch.Generator().manual_seed(0), shear=20)
    assert torch.allclose(sheared, line, atol=1e-5)  # a horizontal shear leaves the centre row in place
    column = line.transpose(-1, -2)
    _, _, tilt = _moments(random_affine(column, torch.Generator().manual_seed(0), shear=20))
    assert (torch.rad2deg(tilt).abs() - 90).abs().max() <= 20.5 and (torch.rad2deg(tilt).abs() - 90).abs().max() > 10


def test_random_affine_identity_range_and_reproducibility():
    x = torch.rand(6, 2, 12, 12)
    g = torch.Generator().manual_seed(0)
    assert random_affine(x, g) is x
    a = random_affine(x, torch.Generator().manual_seed(1), degrees=10, scale=0.1, shear=5)
    b = random_affine(x, torch.Generator().manual_seed(1), degrees=10, scale=0.1, shear=5)
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1  # bilinear resampling of [0, 1] stays in [0, 1]
    tiny = random_affine(x, torch.Generator().manual_seed(1), degrees=1e-4)
    assert torch.allclose(tiny, x, atol=1e-3)


@pytest.mark.parametrize("kwargs, name", [
    ({"degrees": -1.0}, "degrees"), ({"degrees": 181.0}, "degrees"), ({"scale": 1.0}, "scale"),
    ({"shear": 61.0}, "shear"), ({"shear": math.nan}, "shear"), ({"scale": True}, "scale"),
])
def test_random_affine_rejects_bad_parameters(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        random_affine(torch.zeros(1, 1, 4, 4), torch.Generator(), **kwargs)
    with pytest.raises(ConfigError, match="batch of images"):
        random_affine(torch.zeros(4, 4), torch.Generator(), degrees=1.0)


def test_augmented_episode_keeps_labels_and_shift_stream():
    data = make_glyphs(6, samples_per_class=5, seed=0)
    episode = EpisodeSampler(data, 3, 1, 2, seed=0).batch(0, 2)
    distorted = augmented_episode(episode, (0, 0), rotate=15, scale=0.1, shear=10)
    assert torch.equal(distorted.query_y, episode.query_y) and distorted.query_x.shape == episode.query_x.shape
    assert not torch.equal(distorted.query_x, episode.query_x)
    assert torch.equal(augmented_episode(episode, (0, 0), rotate=15, scale=0.1, shear=10).query_x,
                       distorted.query_x)
    # shifts alone are exactly what they were before affine distortions existed
    gen = torch.Generator().manual_seed(_derived_seed(0, 0, _SHIFT_STREAM) % 2**63)
    flat = episode.support_x.reshape(-1, *episode.support_x.shape[-3:])
    assert torch.equal(augmented_episode(episode, (0, 0), shift=2).support_x,
                       random_shift(flat, 2, gen).view(episode.support_x.shape))
    assert torch.equal(shifted_episode(episode, 2, (0, 0)).query_x,
                       augmented_episode(episode, (0, 0), shift=2).query_x)
    assert torch.equal(augmented_episode(episode, (0, 0)).query_x, episode.query_x)
    # with both, the shift offsets are the same draws as with the shift alone
    both = augmented_episode(episode, (0, 0), shift=2, rotate=15)
    expect = augmented_episode(augmented_episode(episode, (0, 0), rotate=15), (0, 0), shift=2)
    assert torch.equal(both.support_x, expect.support_x)

