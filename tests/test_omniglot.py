"""Omniglot loading, caching, download, splits and rotations.

Format tests build tiny official-layout zips and folders in ``tmp_path``; the tests on the real
"small" subsets use the ``omniglot_original`` fixture and skip where the data is absent.
"""

from __future__ import annotations

import hashlib
import io
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtl.data import omniglot
from mtl.data.base import LabelledImages
from mtl.data.omniglot import (
    KNOWN_MD5,
    SHARED_SUBSET_SPLIT,
    alphabet_split,
    drawer_split,
    load_omniglot,
    vinyals_split,
)
from mtl.data.rotations import add_rotated_classes, expand_class_ids, normalize_angles
from mtl.errors import ConfigError, DatasetError

DRAWERS = (1, 2, 3)
BACKGROUND = {"Alpha": 2, "Beta": 3}  # alphabet -> number of characters
SMALL1 = {"Greek": 2, "Balinese": 1}
SMALL2 = {"Greek": 2, "Tagalog": 2}


# ------------------------------------------------------------------------------ synthetic data


def _png(seed: int, square: tuple[int, int] | None = None) -> bytes:
    """A 105x105 mode-"1" PNG: white background, black strokes (as in the official files)."""
    img = np.ones((105, 105), dtype=bool)
    if square is not None:
        img[square[0]:square[1], square[0]:square[1]] = False
    else:
        rng = np.random.default_rng(seed)
        for _ in range(4):
            r, c = rng.integers(5, 90, size=2)
            h, w = rng.integers(3, 15, size=2)
            img[r:r + h, c:c + w] = False
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _members(subset: str, alphabets: dict[str, int]) -> dict[str, bytes]:
    """Official-layout member names -> PNG bytes; content depends on alphabet/character only."""
    files = {}
    for a_idx, (alphabet, n_chars) in enumerate(sorted(alphabets.items())):
        for c in range(1, n_chars + 1):
            gid = 100 * a_idx + c
            for d in DRAWERS:
                key = f"{alphabet}/character{c:02d}/{d}"
                name = f"images_{subset}/{alphabet}/character{c:02d}/{gid:04d}_{d:02d}.png"
                files[name] = _png(zlib.crc32(key.encode()))
    return files


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        dirs = sorted({n.rsplit("/", i)[0] + "/" for n in files for i in (1, 2, 3)})
        for d in dirs:
            zf.writestr(d, b"")
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_zip(root: Path, subset: str, alphabets: dict[str, int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"images_{subset}.zip"
    path.write_bytes(_zip_bytes(_members(subset, alphabets)))
    return path


def make_folder(root: Path, subset: str, alphabets: dict[str, int]) -> Path:
    for name, data in _members(subset, alphabets).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root / f"images_{subset}"


def _same(a: LabelledImages, b: LabelledImages) -> None:
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.targets, b.targets)
    assert a.class_names == b.class_names
    assert a.attribute_names == b.attribute_names
    assert a.attributes.keys() == b.attributes.keys()
    for key in a.attributes:
        assert torch.equal(a.attributes[key], b.attributes[key])


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Never touch ~/.cache: the default cache folder points into tmp_path."""
    monkeypatch.setenv("MTLMETA_CACHE", str(tmp_path / "env-cache"))


def _load(root: Path, subsets=("background",), **kw) -> LabelledImages:
    kw.setdefault("verify_md5", False)  # synthetic zips never match the official MD5s
    return load_omniglot(root, subsets, **kw)


# ----------------------------------------------------------------------------------- format


def test_zip_and_folder_give_identical_sets(tmp_path):
    make_zip(tmp_path / "z", "background", BACKGROUND)
    make_folder(tmp_path / "f", "background", BACKGROUND)
    from_zip = _load(tmp_path / "z", cache=False)
    from_dir = _load(tmp_path / "f", cache=False)
    _same(from_zip, from_dir)


def test_labels_alphabets_and_drawers(tmp_path):
    make_zip(tmp_path, "background", BACKGROUND)
    ds = _load(tmp_path, cache=False)
    assert ds.class_names == [
        "Alpha/character01", "Alpha/character02",
        "Beta/character01", "Beta/character02", "Beta/character03",
    ]
    assert len(ds) == 5 * len(DRAWERS)
    assert ds.images.shape == (15, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.attribute_names["alphabet"] == ["Alpha", "Beta"]
    assert ds.targets.tolist() == [c for c in range(5) for _ in DRAWERS]
    assert ds.attributes["drawer"].tolist() == list(DRAWERS) * 5
    names = ds.attribute_names["alphabet"]
    for target, alphabet in zip(ds.targets.tolist(), ds.attributes["alphabet"].tolist()):
        assert ds.class_names[target].split("/")[0] == names[alphabet]


def test_merge_deduplicates_shared_characters(tmp_path):
    make_zip(tmp_path, "background_small1", SMALL1)
    make_zip(tmp_path, "background_small2", SMALL2)
    ds = _load(tmp_path, ("background_small1", "background_small2"), cache=False)
    assert ds.num_classes == 1 + 2 + 2  # Balinese 1, Greek 2 (once), Tagalog 2
    assert len(ds) == ds.num_classes * len(DRAWERS)
    assert torch.bincount(ds.targets).tolist() == [len(DRAWERS)] * ds.num_classes
    assert ds.attribute_names["alphabet"] == ["Balinese", "Greek", "Tagalog"]
    reverse = _load(tmp_path, ["background_small2", "background_small1"], cache=False)
    _same(ds, reverse)
    assert _load(tmp_path, "background_small2", cache=False).num_classes == 4


def test_invert_and_resize_convention(tmp_path):
    files = {f"images_background/Alpha/character01/0001_{d:02d}.png": _png(0, (35, 70))
             for d in (1, 2)}
    (tmp_path / "images_background.zip").write_bytes(_zip_bytes(files))
    full = _load(tmp_path, image_size=105, cache=False)
    expected = torch.zeros(105, 105)
    expected[35:70, 35:70] = 1.0
    assert torch.equal(full.images[0, 0], expected)
    for resample in omniglot.RESAMPLE_MODES:
        small = _load(tmp_path, image_size=28, resample=resample, cache=False).images
        assert small.shape == (2, 1, 28, 28) and small.dtype == torch.float32
        assert small.min() >= 0.0 and small.max() <= 1.0
        assert small[0, 0, 14, 14] > 0.99 and small[0, 0, 0, 0] == 0.0
        assert abs(small.mean().item() - expected.mean().item()) < 0.02
        grey = ((small > 0.05) & (small < 0.95)).any()
        assert grey == (resample != "bilinear")  # anti-aliased filters blur the square's edge


def test_bad_arguments(tmp_path):
    make_zip(tmp_path, "background", BACKGROUND)
    with pytest.raises(ConfigError, match="unknown Omniglot subset 'images_background'"):
        _load(tmp_path, "images_background")
    with pytest.raises(ConfigError, match="image_size must be a positive int, got 0"):
        _load(tmp_path, image_size=0)
    with pytest.raises(ConfigError, match="unknown resample 'cubic'"):
        _load(tmp_path, resample="cubic")
    with pytest.raises(ConfigError, match="at least one"):
        _load(tmp_path, ())


# ------------------------------------------------------------------------------------ cache


def test_cache_hit_is_identical_and_skips_decoding(tmp_path, monkeypatch):
    make_zip(tmp_path / "data", "background", BACKGROUND)
    cache_dir = tmp_path / "cache"
    first = _load(tmp_path / "data", cache_dir=cache_dir)
    assert len(list(cache_dir.glob("omniglot-background-zip-*-28px-lanczos-v1.pt"))) == 1
    assert not list(cache_dir.glob("*.tmp"))

    def no_decode(*args, **kwargs):
        raise AssertionError("cache miss")

    monkeypatch.setattr(omniglot, "_decode_subset", no_decode)
    _same(first, _load(tmp_path / "data", cache_dir=cache_dir))
    with pytest.raises(AssertionError, match="cache miss"):  # another size is another entry
        _load(tmp_path / "data", cache_dir=cache_dir, image_size=14)
    make_zip(tmp_path / "data", "background", {"Alpha": 1})  # new content, new fingerprint
    with pytest.raises(AssertionError, match="cache miss"):
        _load(tmp_path / "data", cache_dir=cache_dir)


def test_cache_env_var_default_and_cache_off(tmp_path, monkeypatch):
    make_folder(tmp_path / "data", "background", BACKGROUND)
    monkeypatch.setenv("MTLMETA_CACHE", str(tmp_path / "env"))
    assert omniglot.default_cache_dir() == tmp_path / "env"
    _load(tmp_path / "data", cache=False)
    assert not (tmp_path / "env").exists()
    _load(tmp_path / "data")
    assert len(list((tmp_path / "env").glob("omniglot-background-dir-*.pt"))) == 1


def test_corrupt_cache_is_rebuilt(tmp_path):
    make_zip(tmp_path / "data", "background", BACKGROUND)
    cache_dir = tmp_path / "cache"
    first = _load(tmp_path / "data", cache_dir=cache_dir)
    (entry,) = cache_dir.glob("*.pt")
    entry.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="ignoring unreadable Omniglot cache"):
        again = _load(tmp_path / "data", cache_dir=cache_dir)
    _same(first, again)
    _same(first, _load(tmp_path / "data", cache_dir=cache_dir))  # rewritten and valid


# ------------------------------------------------------------------------- integrity errors


def test_wrong_md5_names_file_and_both_digests(tmp_path):
    path = make_zip(tmp_path, "background_small1", SMALL1)
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError) as err:
        load_omniglot(tmp_path, "background_small1", cache=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert "images_background_small1.zip" in msg
    assert KNOWN_MD5["background_small1"] in msg and actual in msg


def test_md5_accepted_when_it_matches(tmp_path, monkeypatch):
    path = make_zip(tmp_path, "background", BACKGROUND)
    monkeypatch.setitem(KNOWN_MD5, "background", hashlib.md5(path.read_bytes()).hexdigest())
    assert load_omniglot(tmp_path, cache=False).num_classes == 5


def test_truncated_zip_names_file(tmp_path):
    path = make_zip(tmp_path, "background", BACKGROUND)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"images_background\.zip is not a readable zip"):
        _load(tmp_path, cache=False)
    with pytest.raises(DatasetError, match=r"images_background\.zip has MD5"):
        load_omniglot(tmp_path, cache=False)


def test_corrupt_png_names_member(tmp_path):
    files = _members("background", {"Alpha": 1})
    bad = next(iter(files))
    files[bad] = b"\x89PNG but not really"
    (tmp_path / "images_background.zip").write_bytes(_zip_bytes(files))
    with pytest.raises(DatasetError, match="cannot read .*0001_01.png from .*images_background"):
        _load(tmp_path, cache=False)


def test_wrong_layout_is_reported(tmp_path):
    files = {n.replace("images_background/", "other/"): d
             for n, d in _members("background", BACKGROUND).items()}
    (tmp_path / "images_background.zip").write_bytes(_zip_bytes(files))
    with pytest.raises(DatasetError, match="holds no images in the layout images_background/"):
        _load(tmp_path, cache=False)


def test_missing_data_message(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        load_omniglot(root, ("background", "evaluation"))
    msg = str(err.value)
    assert "\n" not in msg
    assert f"root={root}" in msg
    assert "images_background.zip" in msg and "images_evaluation.zip" in msg
    assert "download=True" in msg


# --------------------------------------------------------------------------------- download


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_without_network_fails_fast(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout=None, **kwargs):
        calls.append((url, timeout))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "new" / "root"
    start = time.monotonic()
    with pytest.raises(DatasetError) as err:
        load_omniglot(root, "background_small1", download=True)
    assert time.monotonic() - start < 3.0
    msg = str(err.value)
    url = omniglot.DOWNLOAD_URL.format(subset="background_small1")
    assert "\n" not in msg and f"root={root}" in msg and url in msg
    assert calls == [(url, omniglot.DOWNLOAD_TIMEOUT_S)]
    assert 0 < omniglot.DOWNLOAD_TIMEOUT_S <= 10
    assert list(root.iterdir()) == []  # the temp file is gone


def test_download_success_verifies_and_loads(tmp_path, monkeypatch):
    payload = _zip_bytes(_members("background", BACKGROUND))
    monkeypatch.setitem(KNOWN_MD5, "background", hashlib.md5(payload).hexdigest())
    calls = []

    def online(url, timeout=None, **kwargs):
        calls.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", online)
    ds = load_omniglot(tmp_path / "root", download=True, cache=False)
    assert ds.num_classes == 5
    assert (tmp_path / "root" / "images_background.zip").read_bytes() == payload
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["images_background.zip"]
    load_omniglot(tmp_path / "root", download=True, cache=False)
    assert len(calls) == 1  # present zips are not fetched again


def test_download_with_wrong_md5_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: _FakeResponse(b"html error page"))
    with pytest.raises(DatasetError, match="has MD5 .*expected 68d2efa1b9178cc56df9314c21c6e718"):
        load_omniglot(tmp_path, download=True)
    assert list(tmp_path.glob("*images_background*")) == []


# ----------------------------------------------------------------------------------- splits


@pytest.fixture
def merged(tmp_path) -> LabelledImages:
    make_zip(tmp_path, "background_small1", SMALL1)
    make_zip(tmp_path, "background_small2", SMALL2)
    return _load(tmp_path, ("background_small1", "background_small2"), cache=False)


def _check_partition(split: dict[str, list[int]], ds: LabelledImages) -> None:
    parts = [set(v) for v in split.values()]
    assert sum(len(p) for p in parts) == len(set().union(*parts))
    assert set().union(*parts) == set(ds.targets.tolist())
    assert all(v == sorted(v) for v in split.values())


def test_alphabet_split(merged):
    split = alphabet_split(merged, ["Greek"], "Tagalog")
    _check_partition(split, merged)
    names = merged.class_names
    assert [names[c] for c in split["test"]] == ["Greek/character01", "Greek/character02"]
    assert all(names[c].startswith("Tagalog/") for c in split["val"])
    assert [names[c] for c in split["train"]] == ["Balinese/character01"]
    assert alphabet_split(merged, "Greek")["val"] == []


def test_alphabet_split_errors(merged):
    with pytest.raises(DatasetError, match="unknown alphabet 'Klingon'; available: Balinese, "
                                           "Greek, Tagalog"):
        alphabet_split(merged, ["Klingon"])
    with pytest.raises(ConfigError, match="in both"):
        alphabet_split(merged, ["Greek"], ["Greek"])
    with pytest.raises(ConfigError, match="none left for train"):
        alphabet_split(merged, ["Greek", "Balinese"], ["Tagalog"])
    plain = LabelledImages(merged.images, merged.targets)
    with pytest.raises(DatasetError, match="no 'alphabet' attribute"):
        alphabet_split(plain, ["Greek"])


def _fake_characters(count: int) -> LabelledImages:
    return LabelledImages(torch.zeros(count, 1, 1, 1), torch.arange(count),
                          [f"A{i // 40}/character{i % 40:02d}" for i in range(count)])


def test_vinyals_split_full_size_counts_and_determinism():
    full = _fake_characters(omniglot.FULL_OMNIGLOT_CHARACTERS)
    split = vinyals_split(full)
    assert [len(split[k]) for k in ("train", "val", "test")] == [1200, 0, 423]
    _check_partition(split, full)
    assert vinyals_split(full, seed=0) == split
    assert vinyals_split(full, seed=1) != split
    snell = vinyals_split(full, num_train=1028, num_val=172)
    assert [len(snell[k]) for k in ("train", "val", "test")] == [1028, 172, 423]


def test_vinyals_split_scales_and_keeps_rotations_together(merged):
    small = _fake_characters(242)
    split = vinyals_split(small)
    assert [len(split[k]) for k in ("train", "val", "test")] == [179, 0, 63]
    rotated = add_rotated_classes(merged)
    rsplit = vinyals_split(rotated, num_train=1000)
    _check_partition(rsplit, rotated)
    for ids in rsplit.values():  # all 4 rotations of a character are in the same part
        assert len(ids) % 4 == 0
        assert ids == expand_class_ids(sorted({i // 4 for i in ids}), 4)
    with pytest.raises(DatasetError, match="5 characters are too few"):
        vinyals_split(merged, num_train=100)
    with pytest.raises(ConfigError, match="num_train must be a non-negative int"):
        vinyals_split(merged, num_train=-1)
    with pytest.raises(ConfigError, match="below 1623"):
        vinyals_split(merged, num_train=1623)


def test_drawer_split(merged):
    masks = drawer_split(merged, test_drawers=[3], val_drawers=2)
    total = masks["train"].long() + masks["val"].long() + masks["test"].long()
    assert torch.equal(total, torch.ones(len(merged), dtype=torch.long))
    assert merged.attributes["drawer"][masks["test"]].unique().tolist() == [3]
    test_set = merged.select(masks["test"])
    assert test_set.targets.unique().tolist() == list(range(merged.num_classes))
    with pytest.raises(DatasetError, match="unknown drawer 7; available: 1, 2, 3"):
        drawer_split(merged, [7])
    with pytest.raises(ConfigError, match="none left for train"):
        drawer_split(merged, [1, 2, 3])


# -------------------------------------------------------------------------------- rotations


def test_rotations(merged):
    rotated = add_rotated_classes(merged)
    k = merged.num_classes
    assert rotated.num_classes == 4 * k and len(rotated) == 4 * len(merged)
    assert rotated.class_names[:4] == [merged.class_names[0] + s
                                       for s in ("@0", "@90", "@180", "@270")]
    for a, angle in enumerate((0, 90, 180, 270)):
        part = rotated.select(rotated.attributes["rotation"] == a)
        assert torch.equal(part.images, torch.rot90(merged.images, angle // 90, dims=(2, 3)))
        assert torch.equal(part.targets, merged.targets * 4 + a)
        assert torch.equal(part.attributes["alphabet"], merged.attributes["alphabet"])
        assert torch.equal(part.attributes["drawer"], merged.attributes["drawer"])
    assert rotated.attribute_names["rotation"] == ["0", "90", "180", "270"]
    # a class split expands onto the rotated ids
    split = alphabet_split(merged, ["Greek"])
    rsplit = alphabet_split(rotated, ["Greek"])
    assert rsplit["test"] == expand_class_ids(split["test"], 4)
    assert rsplit["train"] == expand_class_ids(split["train"], 4)


def test_rotation_angles_validation(merged):
    assert normalize_angles([0, -90, 450]) == [0, 270, 90]
    two = add_rotated_classes(merged, angles=(0, 180))
    assert two.num_classes == 2 * merged.num_classes
    assert two.class_names[1].endswith("@180")
    for bad in ([45], [], [0, 360], ["90"]):
        with pytest.raises(ConfigError):
            add_rotated_classes(merged, angles=bad)
    with pytest.raises(DatasetError, match="already has a 'rotation'"):
        add_rotated_classes(two)
    wide = LabelledImages(torch.zeros(2, 1, 4, 6), torch.tensor([0, 1]))
    with pytest.raises(DatasetError, match="4x6 are not square"):
        add_rotated_classes(wide)
    assert add_rotated_classes(wide, (0, 180)).images.shape == (4, 1, 4, 6)
    assert expand_class_ids([0, 2], 4) == [0, 1, 2, 3, 8, 9, 10, 11]
    with pytest.raises(ConfigError, match="num_angles must be a positive int"):
        expand_class_ids([1], 0)


# -------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def shared_subsets(omniglot_original, tmp_path_factory) -> LabelledImages:
    cache = tmp_path_factory.mktemp("omniglot-cache")
    return load_omniglot(omniglot_original, ("background_small1", "background_small2"),
                         cache_dir=cache)


def test_real_small_subsets(shared_subsets):
    ds = shared_subsets
    assert ds.num_classes == 242 and len(ds) == 4840
    assert ds.image_shape == (1, 28, 28) and ds.images.dtype == torch.float32
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    assert 0.03 < ds.images.mean() < 0.15  # mostly dark background, bright strokes
    assert torch.bincount(ds.targets).tolist() == [20] * 242
    assert torch.bincount(ds.attributes["drawer"]).tolist() == [0] + [242] * 20
    assert len(ds.attribute_names["alphabet"]) == 8


def test_real_shared_subset_split(shared_subsets):
    ds = shared_subsets
    split = alphabet_split(ds, SHARED_SUBSET_SPLIT["test"], SHARED_SUBSET_SPLIT["val"])
    _check_partition(split, ds)
    assert [len(split[k]) for k in ("train", "val", "test")] == [175, 17, 50]
    names = ds.attribute_names["alphabet"]
    alpha = ds.attributes["alphabet"]
    train_alphabets = {names[a] for a in alpha[torch.isin(ds.targets,
                                                          torch.tensor(split["train"]))].tolist()}
    assert train_alphabets == set(SHARED_SUBSET_SPLIT["train"])
    vsplit = vinyals_split(ds)
    assert [len(vsplit[k]) for k in ("train", "val", "test")] == [179, 0, 63]
    assert add_rotated_classes(ds).num_classes == 968
