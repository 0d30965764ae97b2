"""Unlabelled 28x28 Omniglot sprite sheets: synthetic sheets, then the real ones when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mtl.data.omniglot import load_omniglot
from mtl.data.sprites import UnlabelledImages, load_omniglot_sprites, load_sprite_sheet
from mtl.errors import ConfigError, DatasetError


def _tiles(count: int, tile: int = 28, seed: int = 0) -> np.ndarray:
    """``count`` random non-empty uint8 tiles (white strokes on black)."""
    rng = np.random.default_rng(seed)
    tiles = np.zeros((count, tile, tile), dtype=np.uint8)
    for t in tiles:
        r, c = rng.integers(0, tile - 6, size=2)
        t[r:r + 6, c:c + 6] = rng.integers(1, 256, size=(6, 6))
    return tiles


def write_sheet(path: Path, tiles: np.ndarray, per_row: int = 20, tile: int = 28) -> Path:
    """An RGBA sheet with equal RGB, ``per_row`` tiles per row, last row padded with black."""
    rows = -(-len(tiles) // per_row)
    sheet = np.zeros((rows * tile, per_row * tile), dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, per_row)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = t
    rgba = np.stack([sheet, sheet, sheet, np.full_like(sheet, 255)], axis=-1)
    Image.fromarray(rgba).save(path)
    return path


def test_sheet_tiles_in_reading_order_and_partial_last_row(tmp_path):
    tiles = _tiles(45)
    out = load_sprite_sheet(write_sheet(tmp_path / "s.png", tiles))
    assert out.shape == (45, 1, 28, 28) and out.dtype == torch.float32
    assert torch.equal(out[:, 0], torch.from_numpy(tiles).float() / 255)
    assert out.min() >= 0 and out.max() <= 1


def test_only_trailing_empty_tiles_are_dropped(tmp_path):
    tiles = _tiles(23)
    tiles[5] = 0  # an empty tile inside the sheet keeps its place
    out = load_sprite_sheet(write_sheet(tmp_path / "s.png", tiles))
    assert out.shape[0] == 23 and out[5].sum() == 0
    tiles[20:] = 0  # trailing empties (here: the whole last row) go
    assert load_sprite_sheet(write_sheet(tmp_path / "t.png", tiles)).shape[0] == 20


def test_other_tile_geometry(tmp_path):
    tiles = _tiles(7, tile=10)
    out = load_sprite_sheet(write_sheet(tmp_path / "s.png", tiles, per_row=4, tile=10),
                            tile_size=10, tiles_per_row=4)
    assert out.shape == (7, 1, 10, 10)


def test_sheet_errors(tmp_path):
    Image.new("RGBA", (565, 56)).save(tmp_path / "wide.png")
    with pytest.raises(DatasetError, match="is 565x56 pixels; expected width 560"):
        load_sprite_sheet(tmp_path / "wide.png")
    Image.new("RGBA", (560, 50)).save(tmp_path / "high.png")
    with pytest.raises(DatasetError, match="is 560x50 pixels"):
        load_sprite_sheet(tmp_path / "high.png")
    with pytest.raises(DatasetError, match=f"sprite sheet {tmp_path / 'nope.png'} does not exist"):
        load_sprite_sheet(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot read sprite sheet .*junk.png"):
        load_sprite_sheet(tmp_path / "junk.png")
    with pytest.raises(ConfigError, match="tile_size must be a positive int"):
        load_sprite_sheet(tmp_path / "wide.png", tile_size=0)


def test_load_omniglot_sprites_subsets(tmp_path):
    write_sheet(tmp_path / "images_background.png", _tiles(30, seed=1))
    write_sheet(tmp_path / "images_evaluation.png", _tiles(12, seed=2))
    bg = load_omniglot_sprites(tmp_path)
    ev = load_omniglot_sprites(tmp_path, "evaluation")
    both = load_omniglot_sprites(tmp_path, "all")
    assert (len(bg), len(ev)) == (30, 12)
    assert torch.equal(both, torch.cat([bg, ev]))
    with pytest.raises(ConfigError, match="unknown sprite subset 'train'"):
        load_omniglot_sprites(tmp_path, "train")
    (tmp_path / "images_evaluation.png").unlink()
    with pytest.raises(DatasetError, match="images_evaluation.png does not exist"):
        load_omniglot_sprites(tmp_path, "all")


def test_unlabelled_images():
    images = torch.rand(10, 1, 28, 28)
    ds = UnlabelledImages(images)
    assert len(ds) == 10 and ds.image_shape == (1, 28, 28)
    assert torch.equal(ds[3], images[3])
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 1, 28, 28)
    assert "samples=10" in repr(ds)
    with pytest.raises(DatasetError, match=r"shape \[N, C, H, W\], got \(28, 28\)"):
        UnlabelledImages(torch.rand(28, 28))
    with pytest.raises(DatasetError, match="float tensor"):
        UnlabelledImages(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


# -------------------------------------------------------------------------------- real data


def test_real_sheets(omniglot28):
    bg = load_omniglot_sprites(omniglot28, "background")
    ev = load_omniglot_sprites(omniglot28, "evaluation")
    assert bg.shape == (19280, 1, 28, 28) and ev.shape == (13180, 1, 28, 28)
    for images in (bg, ev):
        assert images.dtype == torch.float32
        assert images.min() == 0.0 and images.max() == 1.0
        assert 0.03 < images.mean() < 0.15  # bright strokes on a dark background
        assert (images.flatten(1).amax(1) > 0).all()  # no empty tile
    assert UnlabelledImages(bg).image_shape == (1, 28, 28)


def test_real_sheets_match_bilinear_resize(omniglot28, omniglot_original, tmp_path):
    """The sheets were made without anti-aliasing: ``resample="bilinear"`` reproduces them."""
    sheet = load_omniglot_sprites(omniglot28, "background").flatten(1)
    labelled = load_omniglot(omniglot_original, "background_small1", resample="bilinear",
                             cache_dir=tmp_path)
    probe = labelled.images[::40].flatten(1)
    nearest = torch.cdist(probe, sheet).min(dim=1).values
    assert nearest.median() < 0.5  # vs about 1.8 for the anti-aliased "lanczos" default
