"""Omniglot in its official format, with deterministic class and sample splits.

Omniglot (Lake, Salakhutdinov and Tenenbaum, "Human-level concept learning through probabilistic
program induction", Science 2015) holds 1623 handwritten characters from 50 alphabets, each drawn
once by 20 different people ("drawers"). The official archives (``python/`` folder of the
``brendenlake/omniglot`` repository) use the layout
``images_<subset>/<Alphabet>/<characterNN>/<NNNN>_<DD>.png``: 105x105 binary PNGs with black
strokes on white, ``NNNN`` the character's global id and ``DD`` the drawer (01..20).

:func:`load_omniglot` reads that layout from an extracted folder or straight from the zip, converts
it to the toolkit convention (float32 in ``[0, 1]``, strokes = 1 on a 0 background, ``[N, 1, H,
W]``) and caches the decoded tensors. :func:`alphabet_split`, :func:`vinyals_split` and
:func:`drawer_split` give the usual deterministic splits.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import random
import re
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mtl.data.base import LabelledImages
from mtl.errors import ConfigError, DatasetError

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "DOWNLOAD_URL",
    "FULL_OMNIGLOT_CHARACTERS",
    "KNOWN_MD5",
    "RESAMPLE_MODES",
    "SHARED_SUBSET_SPLIT",
    "SUBSETS",
    "alphabet_split",
    "default_cache_dir",
    "download_omniglot",
    "drawer_split",
    "load_omniglot",
    "vinyals_split",
]

SUBSETS: tuple[str, ...] = ("background", "evaluation", "background_small1", "background_small2")
"""Official subset names; subset ``s`` lives in ``images_<s>.zip`` / ``images_<s>/``."""

KNOWN_MD5: dict[str, str] = {
    "background": "68d2efa1b9178cc56df9314c21c6e718",
    "evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
    "background_small1": "e704a628b5459e08445c13499850abc4",
    "background_small2": "b75a71a51d3b13f821f212756fe481fd",
}
"""MD5 of each official ``images_<subset>.zip``."""

DOWNLOAD_URL = (
    "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_{subset}.zip"
)
"""Where ``download=True`` fetches ``images_<subset>.zip`` from."""

DOWNLOAD_TIMEOUT_S = 5.0
"""Socket timeout (connect and each read) for downloads, so that a missing network fails fast."""

FULL_OMNIGLOT_CHARACTERS = 1623
"""Characters in full Omniglot (964 background + 659 evaluation)."""

RESAMPLE_MODES: tuple[str, ...] = ("lanczos", "box", "bilinear")
"""Resize filters of :func:`load_omniglot` (see its ``resample`` argument)."""

SHARED_SUBSET_SPLIT: dict[str, tuple[str, ...]] = {
    "train": ("Balinese", "Early_Aramaic", "Japanese_(katakana)", "Korean", "Sanskrit"),
    "val": ("Tagalog",),
    "test": ("Greek", "Latin"),
}
"""Default alphabet-disjoint split of the 242-character "small" subsets (small1 + small2).

Train: 175 characters (5 alphabets), val: 17 (Tagalog), test: 50 (Greek and Latin). Use as
``alphabet_split(ds, SHARED_SUBSET_SPLIT["test"], SHARED_SUBSET_SPLIT["val"])``; the train
alphabets are then exactly ``SHARED_SUBSET_SPLIT["train"]``.
"""

_CACHE_VERSION = 1
_FILE_RE = re.compile(r"^(\d+)_(\d+)\.png$")
_ROTATION_SUFFIX_RE = re.compile(r"@-?\d+$")
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """The cache folder: ``$MTLMETA_CACHE`` if set, else ``~/.cache/mtlmeta``."""
    env = os.environ.get("MTLMETA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mtlmeta"


def _load_cache(path: Path, image_size: int) -> dict | None:
    """The cached payload at ``path``, or ``None`` when absent or unusable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        images = payload["images"]
        ok = (
            payload.get("version") == _CACHE_VERSION
            and isinstance(images, torch.Tensor)
            and images.dtype == torch.float32
            and images.dim() == 4
            and tuple(images.shape[1:]) == (1, image_size, image_size)
            and payload["targets"].shape == (images.shape[0],)
            and payload["drawers"].shape == (images.shape[0],)
            and all(isinstance(k, str) for k in payload["class_keys"])
        )
    except Exception as exc:  # any unreadable cache is simply rebuilt
        warnings.warn(f"ignoring unreadable Omniglot cache {path}: {exc}", stacklevel=3)
        return None
    if not ok:
        warnings.warn(f"ignoring Omniglot cache {path}: unexpected content", stacklevel=3)
        return None
    return payload


def _save_cache(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (temp file + ``os.replace``); warn on failure."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        warnings.warn(f"could not write Omniglot cache {path}: {exc}", stacklevel=3)
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ decoding


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _folder_fingerprint(folder: Path) -> str:
    """MD5 of the sorted ``relative path, size, mtime`` of every PNG under ``folder``."""
    digest = hashlib.md5()
    for png in sorted(folder.glob("*/*/*.png")):
        stat = png.stat()
        digest.update(f"{png.relative_to(folder).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}\n"
                      .encode())
    return digest.hexdigest()


def _decode_png(data: bytes, image_size: int, resample: str) -> np.ndarray:
    """One official PNG as a float32 ``[image_size, image_size]`` array, strokes = 1."""
    with Image.open(io.BytesIO(data)) as img:
        gray = np.asarray(img.convert("L"), dtype=np.float32)
    inverted = 1.0 - gray / 255.0
    if inverted.shape == (image_size, image_size):
        return inverted
    if resample == "bilinear":
        tensor = torch.from_numpy(inverted)[None, None]
        out = torch.nn.functional.interpolate(
            tensor, size=(image_size, image_size), mode="bilinear", align_corners=False
        )[0, 0].numpy()
    else:
        flt = Image.LANCZOS if resample == "lanczos" else Image.BOX
        out = np.asarray(
            Image.fromarray(inverted).resize((image_size, image_size), flt),
            dtype=np.float32,
        )
    return np.clip(out, 0.0, 1.0)


def _parse_member(parts: Sequence[str]) -> tuple[str, int, str] | None:
    """``(class_key, drawer, file name)`` for ``[Alphabet, characterNN, NNNN_DD.png]``."""
    alphabet, character, filename = parts
    match = _FILE_RE.match(filename)
    if not alphabet or not character or match is None:
        return None
    return f"{alphabet}/{character}", int(match.group(2)), filename


def _decode_subset(
    source: Path, subset: str, image_size: int, resample: str
) -> dict[str, object]:
    """Decode every image of one subset from a zip or an extracted folder."""
    top = f"images_{subset}"
    entries: list[tuple[str, int, str, str]] = []  # class key, drawer, file name, locator
    zf: zipfile.ZipFile | None = None
    try:
        if source.is_dir():
            for png in source.glob("*/*/*.png"):
                parsed = _parse_member(png.relative_to(source).parts)
                if parsed is not None:
                    entries.append((*parsed, str(png)))
        else:
            try:
                zf = zipfile.ZipFile(source)
                names = zf.namelist()
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise DatasetError(
                    f"{source} is not a readable zip ({exc}); delete it and download it again"
                ) from None
            for name in names:
                parts = name.split("/")
                if len(parts) != 4 or parts[0] != top:
                    continue
                parsed = _parse_member(parts[1:])
                if parsed is not None:
                    entries.append((*parsed, name))
        if not entries:
            raise DatasetError(
                f"{source} holds no images in the layout {top}/<Alphabet>/<characterNN>/"
                "<NNNN>_<DD>.png"
            )
        entries.sort(key=lambda e: (e[0], e[1], e[2]))
        arrays = []
        for _, _, _, locator in entries:
            try:
                data = zf.read(locator) if zf is not None else Path(locator).read_bytes()
                arrays.append(_decode_png(data, image_size, resample))
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, UnidentifiedImageError,
                    RuntimeError) as exc:
                raise DatasetError(
                    f"cannot read {locator} from {source}: {exc}".replace("\n", " ")
                ) from None
    finally:
        if zf is not None:
            zf.close()
    class_keys = sorted({e[0] for e in entries})
    index = {key: i for i, key in enumerate(class_keys)}
    return {
        "version": _CACHE_VERSION,
        "images": torch.from_numpy(np.stack(arrays))[:, None].contiguous(),
        "targets": torch.tensor([index[e[0]] for e in entries], dtype=torch.long),
        "drawers": torch.tensor([e[1] for e in entries], dtype=torch.long),
        "class_keys": class_keys,
    }


# ------------------------------------------------------------------------------------ download


def download_omniglot(
    root: str | os.PathLike,
    subsets: str | Sequence[str] = ("background",),
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> list[Path]:
    """Fetch the official ``images_<subset>.zip`` files missing from ``root`` (Lake et al. 2015).

    Each zip is streamed from :data:`DOWNLOAD_URL` into a temp file in ``root`` (created if
    needed), its MD5 is checked against :data:`KNOWN_MD5`, and only then is it renamed into
    place. Zips already present are left alone. ``timeout`` is the socket timeout in seconds, so
    that a machine without network fails within a few seconds.

    Returns:
        The paths of the zips for ``subsets``.

    Raises:
        DatasetError: on a network error or an MD5 mismatch (naming ``root=`` and the URL).
    """
    root_path = Path(root).expanduser()
    names = _check_subsets(subsets)
    try:
        root_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create Omniglot root={root_path}: {exc}") from None
    paths = []
    for subset in names:
        target = root_path / f"images_{subset}.zip"
        if not target.is_file():
            _download_one(subset, target, timeout)
        paths.append(target)
    return paths


def _download_one(subset: str, target: Path, timeout: float) -> None:
    url = DOWNLOAD_URL.format(subset=subset)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        digest = hashlib.md5()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = str(exc).replace("\n", " ")
            raise DatasetError(
                f"could not download {url} into root={target.parent} ({reason}); check the "
                f"network, or place {target.name} there by hand"
            ) from None
        actual, expected = digest.hexdigest(), KNOWN_MD5[subset]
        if actual != expected:
            raise DatasetError(
                f"download of {url} into root={target.parent} has MD5 {actual}, expected "
                f"{expected}; nothing was saved, try again"
            )
        os.replace(tmp_name, target)
        tmp_name = None
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- loading


def _check_subsets(subsets: str | Sequence[str]) -> list[str]:
    names = [subsets] if isinstance(subsets, str) else list(subsets)
    if not names:
        raise ConfigError(f"subsets must name at least one of {', '.join(SUBSETS)}; got none")
    for name in names:
        if name not in SUBSETS:
            raise ConfigError(f"unknown Omniglot subset {name!r}; allowed: {', '.join(SUBSETS)}")
    return list(dict.fromkeys(names))


def _find_source(root: Path, subset: str) -> Path | None:
    """The zip (preferred: it can be verified) or the extracted folder of ``subset``."""
    zipped = root / f"images_{subset}.zip"
    if zipped.is_file():
        return zipped
    folder = root / f"images_{subset}"
    return folder if folder.is_dir() else None


def _load_subset(
    source: Path,
    subset: str,
    image_size: int,
    resample: str,
    verify_md5: bool,
    cache_dir: Path | None,
) -> dict:
    if source.is_dir():
        kind, fingerprint = "dir", _folder_fingerprint(source)
    else:
        kind, fingerprint = "zip", _file_md5(source)
        expected = KNOWN_MD5[subset]
        if verify_md5 and fingerprint != expected:
            raise DatasetError(
                f"{source} has MD5 {fingerprint}, expected {expected}; the file is corrupt or "
                "not the official one: delete it and download it again"
            )
    cache_path = None
    if cache_dir is not None:
        cache_path = cache_dir / (
            f"omniglot-{subset}-{kind}-{fingerprint[:16]}-{image_size}px-{resample}"
            f"-v{_CACHE_VERSION}.pt"
        )
        cached = _load_cache(cache_path, image_size)
        if cached is not None:
            return cached
    payload = _decode_subset(source, subset, image_size, resample)
    if cache_path is not None:
        _save_cache(cache_path, payload)
    return payload


def load_omniglot(
    root: str | os.PathLike,
    subsets: str | Sequence[str] = ("background",),
    image_size: int = 28,
    download: bool = False,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    verify_md5: bool = True,
    resample: str = "lanczos",
) -> LabelledImages:
    """Load official Omniglot (Lake, Salakhutdinov and Tenenbaum 2015) as a :class:`LabelledImages`.

    Each subset is read from ``root/images_<subset>.zip`` (members read in place, no extraction;
    preferred when both exist) or from the extracted folder ``root/images_<subset>/``, in the
    layout ``<Alphabet>/<characterNN>/<NNNN>_<DD>.png``. Several subsets are merged; a character
    present in more than one (Greek and Latin are in both "small" subsets) is kept once, from the
    first subset listing it.

    Images are inverted (strokes = 1 on 0) and resized from 105x105 to ``image_size`` on the
    float image: ``"lanczos"`` (default) and ``"box"`` are anti-aliased PIL filters;
    ``"bilinear"`` is plain bilinear interpolation without anti-aliasing, which reproduces the
    unlabelled 28x28 sprite sheets of :mod:`mtl.data.sprites` far more closely. The result is
    float32 in ``[0, 1]``, shape ``[N, 1, image_size, image_size]``.

    Classes are ``"Alphabet/characterNN"``, ids in sorted name order; samples are ordered by
    class, then drawer. Attributes: ``alphabet`` (id into ``attribute_names["alphabet"]``, the
    sorted alphabet names) and ``drawer`` (the ``DD`` number of the file name, 1..20; no names).

    Decoded tensors are cached per subset in ``cache_dir`` (default :func:`default_cache_dir`),
    keyed by the zip's MD5 (or the folder's file names, sizes and mtimes), ``image_size`` and
    ``resample``.

    Args:
        root: folder holding the zips or extracted folders.
        subsets: one or more of :data:`SUBSETS`.
        image_size: output side length in pixels (105 keeps the original binary images).
        download: fetch missing zips with :func:`download_omniglot` first.
        cache: read and write the decoded-tensor cache.
        cache_dir: cache folder overriding ``$MTLMETA_CACHE`` and ``~/.cache/mtlmeta``.
        verify_md5: check zips against :data:`KNOWN_MD5` (disable only for re-packed archives).
        resample: one of :data:`RESAMPLE_MODES`.

    Raises:
        ConfigError: for a bad subset name, ``image_size`` or ``resample``.
        DatasetError: for missing data (naming ``root=`` and the files looked for), a zip with
            the wrong MD5, or a corrupt zip or PNG (naming the file).
    """
    names = _check_subsets(subsets)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive int, got {image_size!r}")
    if resample not in RESAMPLE_MODES:
        raise ConfigError(f"unknown resample {resample!r}; allowed: {', '.join(RESAMPLE_MODES)}")
    root_path = Path(root).expanduser()

    sources = {name: _find_source(root_path, name) for name in names}
    missing = [name for name, src in sources.items() if src is None]
    if missing and download:
        download_omniglot(root_path, missing)
        sources = {name: _find_source(root_path, name) for name in names}
    elif missing:
        looked = ", ".join(f"images_{m}.zip or images_{m}/" for m in missing)
        raise DatasetError(
            f"Omniglot not found in root={root_path}: looked for {looked}; pass download=True "
            "to fetch the official zips"
        )

    resolved_cache = None
    if cache:
        resolved_cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()

    images, keys, drawers = [], [], []
    seen: set[str] = set()
    for name in names:
        part = _load_subset(sources[name], name, image_size, resample, verify_md5,
                            resolved_cache)
        part_keys: list[str] = part["class_keys"]
        fresh = [k not in seen for k in part_keys]
        if not any(fresh):
            continue
        keep = torch.tensor(fresh, dtype=torch.bool)[part["targets"]]
        images.append(part["images"][keep])
        drawers.append(part["drawers"][keep])
        keys.extend(part_keys[i] for i in part["targets"][keep].tolist())
        seen.update(part_keys)

    class_names = sorted(seen)
    class_index = {k: i for i, k in enumerate(class_names)}
    alphabet_names = sorted({k.split("/", 1)[0] for k in class_names})
    alphabet_index = {a: i for i, a in enumerate(alphabet_names)}
    targets = torch.tensor([class_index[k] for k in keys], dtype=torch.long)
    alphabets = torch.tensor([alphabet_index[k.split("/", 1)[0]] for k in keys],
                             dtype=torch.long)
    # Stable sort by class id: within a class the per-subset (drawer, file) order is kept, and
    # the result does not depend on the order of ``subsets``.
    order = torch.sort(targets, stable=True).indices
    return LabelledImages(
        torch.cat(images)[order],
        targets[order],
        class_names,
        {"alphabet": alphabets[order], "drawer": torch.cat(drawers)[order]},
        {"alphabet": alphabet_names},
    )


# -------------------------------------------------------------------------------------- splits


def _as_names(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _present_classes(dataset: LabelledImages) -> list[int]:
    return torch.unique(dataset.targets).tolist()


def _class_alphabets(dataset: LabelledImages) -> dict[int, int]:
    """Alphabet id of every class that has samples (each class must have exactly one)."""
    if "alphabet" not in dataset.attributes or "alphabet" not in dataset.attribute_names:
        raise DatasetError(
            "dataset has no 'alphabet' attribute with names; alphabet_split needs a set from "
            "load_omniglot (or add_rotated_classes of one)"
        )
    pairs = torch.unique(torch.stack([dataset.targets, dataset.attributes["alphabet"]]), dim=1)
    mapping: dict[int, int] = {}
    for cls, alphabet in pairs.t().tolist():
        if cls in mapping:
            raise DatasetError(f"class {dataset.class_names[cls]!r} mixes several alphabets")
        mapping[cls] = alphabet
    return mapping


def _check_test_val(kind: str, test: list, val: list, available: list) -> None:
    """Validate held-out ``test`` / ``val`` alphabets or drawers against the ``available`` ones."""
    if not test:
        raise ConfigError(f"test_{kind}s must name at least one {kind}; got none")
    for value in test + val:
        if value not in available:
            raise DatasetError(f"unknown {kind} {value!r}; available: {', '.join(map(str, available))}")
    both = sorted(set(test) & set(val))
    if both:
        raise ConfigError(f"{kind}s {both} are in both test_{kind}s and val_{kind}s")


def alphabet_split(
    dataset: LabelledImages,
    test_alphabets: str | Sequence[str],
    val_alphabets: str | Sequence[str] = (),
) -> dict[str, list[int]]:
    """Alphabet-disjoint class split (the background/evaluation idea of Lake et al. 2015).

    Every class with samples goes to ``test`` if its alphabet is in ``test_alphabets``, to
    ``val`` if in ``val_alphabets``, else to ``train``. Works on rotated sets too (the
    ``alphabet`` attribute is carried over). See :data:`SHARED_SUBSET_SPLIT`.

    Returns:
        ``{"train": ids, "val": ids, "test": ids}``, each sorted, pairwise disjoint, together
        covering every class with samples.

    Raises:
        DatasetError: for an alphabet name not in the dataset (the message lists those present).
        ConfigError: for no test alphabet, an alphabet in both lists, or nothing left to train.
    """
    test, val = _as_names(test_alphabets), _as_names(val_alphabets)
    class_alpha = _class_alphabets(dataset)
    names = dataset.attribute_names["alphabet"]
    available = sorted({names[a] for a in class_alpha.values()})
    _check_test_val("alphabet", test, val, available)
    split: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for cls in sorted(class_alpha):
        name = names[class_alpha[cls]]
        split["test" if name in test else "val" if name in val else "train"].append(cls)
    if not split["train"]:
        raise ConfigError(
            f"test and val alphabets cover all of {', '.join(available)}; none left for train"
        )
    return split


def vinyals_split(
    dataset: LabelledImages,
    num_train: int = 1200,
    num_val: int = 0,
    seed: int = 0,
) -> dict[str, list[int]]:
    """Random character split in the style of Vinyals et al. 2016 (Matching Networks).

    Vinyals et al. train on 1200 randomly chosen characters of full Omniglot (1623) and test on
    the remaining 423, mixing alphabets; Snell et al. 2017 take 172 of the 1200 for validation
    (``num_train=1028, num_val=172``). The split is over characters: a rotated set from
    :func:`~mtl.data.rotations.add_rotated_classes` keeps all rotations of one character
    (class names ``"<character>@<angle>"``) in the same part.

    ``num_train`` and ``num_val`` count characters of full Omniglot. On a set with a different
    number ``C`` of characters they are scaled proportionally: ``round(num_train * C / 1623)``
    (likewise for val; the rest is test), e.g. 179 train / 63 test on the 242-character small
    subsets. Characters are shuffled with ``random.Random(seed)`` after sorting by name, so the
    split is deterministic.

    Returns:
        ``{"train": ids, "val": ids, "test": ids}``, each sorted, pairwise disjoint, together
        covering every class with samples.

    Raises:
        ConfigError: for negative counts or ``num_train + num_val >= 1623``.
        DatasetError: when the set is too small to give a non-empty train and test part.
    """
    for label, value in (("num_train", num_train), ("num_val", num_val)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{label} must be a non-negative int, got {value!r}")
    if num_train + num_val >= FULL_OMNIGLOT_CHARACTERS:
        raise ConfigError(
            f"num_train + num_val must be below {FULL_OMNIGLOT_CHARACTERS} (full Omniglot), "
            f"got {num_train} + {num_val}"
        )
    groups: dict[str, list[int]] = {}
    for cls in _present_classes(dataset):
        base = _ROTATION_SUFFIX_RE.sub("", dataset.class_names[cls])
        groups.setdefault(base, []).append(cls)
    characters = sorted(groups)
    count = len(characters)
    n_train = round(num_train * count / FULL_OMNIGLOT_CHARACTERS)
    n_val = round(num_val * count / FULL_OMNIGLOT_CHARACTERS)
    if n_train < 1 or n_train + n_val >= count:
        raise DatasetError(
            f"{count} characters are too few for num_train={num_train}, num_val={num_val} "
            f"(scaled to {n_train} train, {n_val} val, {count - n_train - n_val} test)"
        )
    random.Random(seed).shuffle(characters)
    parts = {
        "train": characters[:n_train],
        "val": characters[n_train:n_train + n_val],
        "test": characters[n_train + n_val:],
    }
    return {key: sorted(c for ch in chars for c in groups[ch]) for key, chars in parts.items()}


def drawer_split(
    dataset: LabelledImages,
    test_drawers: int | Sequence[int],
    val_drawers: int | Sequence[int] = (),
) -> dict[str, torch.Tensor]:
    """Sample split by drawer: every class in every part, held-out people in test.

    Omniglot has 20 drawers per character (Lake et al. 2015); holding some out gives a test set
    of new drawings of known classes, as used by the multi-task side.

    Args:
        dataset: a set with a ``drawer`` attribute (values 1..20), e.g. from :func:`load_omniglot`.
        test_drawers: drawer numbers (as in the file names, 1..20) for the test part.
        val_drawers: drawer numbers for the val part (default none).

    Returns:
        ``{"train": mask, "val": mask, "test": mask}``: bool tensors ``[N]``, pairwise disjoint,
        together covering all samples (use with ``dataset.select(mask)``).

    Raises:
        DatasetError: for a missing ``drawer`` attribute or a drawer not in the dataset.
        ConfigError: for no test drawer, a drawer in both lists, or no drawer left to train.
    """
    if "drawer" not in dataset.attributes:
        raise DatasetError("dataset has no 'drawer' attribute; use a set from load_omniglot")
    test = [test_drawers] if isinstance(test_drawers, int) else list(test_drawers)
    val = [val_drawers] if isinstance(val_drawers, int) else list(val_drawers)
    drawer = dataset.attributes["drawer"]
    available = torch.unique(drawer).tolist()
    _check_test_val("drawer", test, val, available)
    test_mask = torch.isin(drawer, torch.tensor(test, dtype=drawer.dtype))
    val_mask = torch.isin(drawer, torch.tensor(val, dtype=drawer.dtype))
    train_mask = ~(test_mask | val_mask)
    if not bool(train_mask.any()):
        raise ConfigError(
            f"test and val drawers cover all of {available}; none left for train"
        )
    return {"train": train_mask, "val": val_mask, "test": test_mask}
