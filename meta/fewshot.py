"""Few-shot experiments end to end: data and class splits, algorithm, meta-training, evaluation.

:func:`run_fewshot` is what ``mtlmeta fewshot train`` runs; :func:`build_algorithm` and
:func:`fewshot_data` are usable on their own.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meta.evaluation import evaluate
from meta.maml import ANIL, FOMAML, MAML, MAMLPlusPlus, MetaSGD, ProtoMAML
from meta.protonet import EmbeddingEnsemble, ProtoNet
from meta.reptile import Reptile
from meta.trainer import MetaTrainer, MetaTrainerConfig
from mtl.backbones import create_backbone
from mtl.data.augment import AFFINE_LIMITS, random_affine, random_shift
from mtl.data.base import LabelledImages
from mtl.data.episodes import Episode, _derived_seed
from mtl.errors import ConfigError, DatasetError
from mtl.utils import (
    Budget,
    atomic_write_json,
    check_new_output,
    prepare_out_dir,
    resolve_device,
    seed_everything,
)
from mtl.utils import distributed as dist_utils
from mtl.utils.precision import bf16_is_native, check_precision

ALGORITHMS: dict[str, type[nn.Module]] = {
    "maml": MAML,
    "fomaml": FOMAML,
    "metasgd": MetaSGD,
    "anil": ANIL,
    "mamlpp": MAMLPlusPlus,
    "protomaml": ProtoMAML,
    "reptile": Reptile,
    "protonet": ProtoNet,
}
DATASETS = ("glyphs", "omniglot", "sinusoid")
ANY_WAYS = ("protonet", "protomaml")  # classify any number of classes (a head from prototypes, or none)
TASK_PARALLEL = tuple(name for name, cls in ALGORITHMS.items() if issubclass(cls, MAML))  # outer_backward(workers=)
TEST_SEED = 20_170_000  # test tasks are the same for every training seed
_SHIFT_STREAM = 7_013  # keeps the augmentation offsets apart from the episode sampler's stream
_AFFINE_STREAM = 7_019  # and the affine distortions apart from both


@dataclass
class FewShotConfig:
    """Everything that defines a few-shot run (the CLI's options)."""

    algo: str = "protonet"
    dataset: str = "glyphs"
    root: str | None = None
    download: bool = False  # fetch the official Omniglot zips into root when missing
    backbone: str | None = None  # default: conv4 for images, mlp for sinusoid
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    ways: int = 5
    train_ways: int | None = None  # ProtoNets often train with more ways than they test
    val_ways: int | None = None  # ways of the validation tasks (default: ways), for a small validation split
    shots: int = 1
    queries: int = 15
    meta_batch: int | None = None
    inner_steps: int | None = None  # default: 5 for mamlpp (MAML++), 1 for the rest
    eval_inner_steps: int | None = None
    inner_lr: float | None = None
    meta_lr: float = 1e-3
    rotations: bool = True  # 90-degree rotations as extra training classes (omniglot)
    glyph_classes: tuple[int, int, int] = (600, 100, 200)  # train / val / test glyph classes
    validate_every: int = 100
    validation_tasks: int = 100
    test_tasks: int = 600
    checkpoint_every: int = 100
    snapshot_seconds: tuple[float, ...] = ()
    seed: int = 0
    augment_shift: int = 0  # training images moved by up to this many pixels (0: no augmentation)
    augment_rotate: float = 0.0  # training images rotated by up to this many degrees
    augment_scale: float = 0.0  # ... stretched along x and y by factors in [1 - s, 1 + s]
    augment_shear: float = 0.0  # ... sheared by up to this many degrees
    schedule: str = "constant"  # meta learning-rate schedule: constant | cosine | step
    schedule_iterations: int = 10_000  # cosine: length of the decay; step: halve every third of it
    init: str | None = None  # start from these weights (e.g. a pre-trained classifier); heads of another shape skipped
    task_workers: int = 1  # MAML family: tasks of a meta-batch on this many threads (MAML.outer_backward)
    precision: str = "fp32"  # bf16: meta-updates under bfloat16 autocast (fast on AMX CPUs and recent GPUs)
    pseudo_pool: str | None = None  # unlabelled images (sprite sheets .png or folders; several joined by os.pathsep)
    pseudo_classes: int = 0  # k-means clusters of the pool (0: none)
    pseudo_size: int = 20  # images kept per cluster, those nearest its centre
    pseudo_embed: str | None = None  # checkpoint whose network embeds the pool (default: init)
    zero_head: bool = False  # the meta-learned head starts at zero (after init), the same for every class
    msl_iterations: int | None = None  # mamlpp: multi-step loss annealed over N iterations (schedule_iterations / 10)
    first_order_until: int | None = None  # mamlpp: first order before iteration N (schedule_iterations / 3)

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ConfigError(f"algo must be one of {', '.join(ALGORITHMS)}, got {self.algo!r}")
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.dataset == "sinusoid" and self.algo in ANY_WAYS:
            raise ConfigError(f"algo {self.algo!r} classifies; it cannot run on the regression dataset 'sinusoid'")
        for name in ("ways", "shots", "inner_steps", "validate_every", "validation_tasks", "test_tasks",
                     "checkpoint_every", "msl_iterations"):
            value = getattr(self, name)
            if value is None and name in ("inner_steps", "msl_iterations"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.first_order_until is not None and (isinstance(self.first_order_until, bool) or not isinstance(
                self.first_order_until, int) or self.first_order_until < 0):
            raise ConfigError(f"first_order_until must be an integer >= 0, got {self.first_order_until!r}")
        for name in ("msl_iterations", "first_order_until"):
            if getattr(self, name) is not None and self.algo != "mamlpp":
                raise ConfigError(f"{name} is a MAML++ setting (algo 'mamlpp'), got algo {self.algo!r}")
        if self.val_ways is not None and (isinstance(self.val_ways, bool) or not isinstance(self.val_ways, int)
                                          or not 2 <= self.val_ways):
            raise ConfigError(f"val_ways must be an integer >= 2, got {self.val_ways!r}")
        if self.val_ways is not None and self.algo not in ANY_WAYS and not self.is_regression and (
                self.val_ways > (self.train_ways or self.ways)):
            raise ConfigError(f"val_ways={self.val_ways} is more than the {self.train_ways or self.ways} outputs "
                              f"of {self.algo}'s head; only {' and '.join(ANY_WAYS)} validate with more classes "
                              "than they train on")
        if not isinstance(self.queries, int) or self.queries < 1:
            raise ConfigError(f"queries must be a positive integer, got {self.queries!r}")
        if isinstance(self.augment_shift, bool) or not isinstance(self.augment_shift, int) or not (
                0 <= self.augment_shift <= 8):
            raise ConfigError(f"augment_shift must be an integer number of pixels in 0..8, got {self.augment_shift!r}")
        for name, limit in (("augment_rotate", "degrees"), ("augment_scale", "scale"), ("augment_shear", "shear")):
            value, high = getattr(self, name), AFFINE_LIMITS[limit]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= high):
                raise ConfigError(f"{name} must be a number in [0, {high:g}], got {value!r}")
        if self.augments_images and self.dataset == "sinusoid":
            raise ConfigError("augment_* options change images; dataset 'sinusoid' has none")
        if self.schedule not in ("constant", "cosine", "step"):
            raise ConfigError(f"schedule must be constant, cosine or step, got {self.schedule!r}")
        if isinstance(self.schedule_iterations, bool) or not isinstance(self.schedule_iterations, int) or (
                self.schedule_iterations < 1):
            raise ConfigError(f"schedule_iterations must be a positive integer, got {self.schedule_iterations!r}")
        if isinstance(self.task_workers, bool) or not isinstance(self.task_workers, int) or self.task_workers < 1:
            raise ConfigError(f"task_workers must be a positive integer, got {self.task_workers!r}")
        if self.task_workers > 1 and self.algo not in TASK_PARALLEL:
            raise ConfigError(f"task_workers={self.task_workers} needs one of the MAML family "
                              f"({', '.join(TASK_PARALLEL)}), got algo {self.algo!r}")
        check_precision(self.precision)
        if isinstance(self.pseudo_pool, (list, tuple)):  # several pools: one string, as checkpoints record it
            self.pseudo_pool = os.pathsep.join(str(p) for p in self.pseudo_pool) or None
        if isinstance(self.pseudo_classes, bool) or not isinstance(self.pseudo_classes, int) or self.pseudo_classes < 0:
            raise ConfigError(f"pseudo_classes must be a non-negative integer, got {self.pseudo_classes!r}")
        if isinstance(self.pseudo_size, bool) or not isinstance(self.pseudo_size, int) or self.pseudo_size < 1:
            raise ConfigError(f"pseudo_size must be a positive integer, got {self.pseudo_size!r}")
        if (self.pseudo_pool is None) != (self.pseudo_classes == 0):
            raise ConfigError("pseudo_pool and pseudo_classes go together: a pool of unlabelled images and the "
                              f"number of clusters to make of it (got pseudo_pool={self.pseudo_pool!r}, "
                              f"pseudo_classes={self.pseudo_classes})")
        if self.pseudo_pool is not None and self.dataset == "sinusoid":
            raise ConfigError("pseudo-classes cluster images; dataset 'sinusoid' has none")
        if self.pseudo_pool is not None and (self.pseudo_embed or self.init) is None:
            raise ConfigError("pseudo-classes need a trained network to embed the pool: pass init "
                              "(--init CKPT) or pseudo_embed (--pseudo-embed CKPT)")
        if self.pseudo_size < self.shots + self.queries and self.pseudo_pool is not None:
            raise ConfigError(f"pseudo_size={self.pseudo_size} is below shots + queries = "
                              f"{self.shots + self.queries}, the images a training episode takes from a class")
        if not isinstance(self.zero_head, bool):
            raise ConfigError(f"zero_head must be True or False, got {self.zero_head!r}")
        if self.zero_head and self.algo in ANY_WAYS:
            raise ConfigError(f"zero_head starts a meta-learned head at zero; {self.algo} has none "
                              "(protonet: no head; protomaml: a head from the prototypes of each task)")
        if self.inner_lr is not None and not (self.inner_lr > 0 and math.isfinite(self.inner_lr)):
            raise ConfigError(f"inner_lr must be a finite number > 0, got {self.inner_lr!r}")
        if self.test_tasks < 600:
            pass  # allowed for quick runs; papers use >= 600 (documented in the CLI help)

    @property
    def is_regression(self) -> bool:
        return self.dataset == "sinusoid"

    @property
    def augments_images(self) -> bool:
        """Whether training images are shifted or distorted."""
        return bool(self.augment_shift or self.augment_rotate or self.augment_scale or self.augment_shear)

    def resolved(self) -> FewShotConfig:
        """A copy with per-algorithm defaults filled in (what is recorded in checkpoints)."""
        cfg = FewShotConfig(**asdict(self))
        cfg.glyph_classes = tuple(cfg.glyph_classes)  # type: ignore[assignment]
        if cfg.backbone is None:
            cfg.backbone = "mlp" if cfg.is_regression else "conv4"
        if cfg.train_ways is None:
            cfg.train_ways = cfg.ways
        if cfg.val_ways is None:
            cfg.val_ways = cfg.ways
        if cfg.meta_batch is None:
            cfg.meta_batch = {"protonet": 1, "reptile": 5}.get(cfg.algo, 25 if cfg.is_regression else 16)
        if cfg.inner_steps is None:
            cfg.inner_steps = 5 if cfg.algo == "mamlpp" else 1
        if cfg.algo == "mamlpp":  # MAML++ schedules scaled to the run: MSL its first tenth, first order its first third
            if cfg.msl_iterations is None:
                cfg.msl_iterations = max(1, cfg.schedule_iterations // 10)
            if cfg.first_order_until is None:
                cfg.first_order_until = cfg.schedule_iterations // 3
        if cfg.inner_lr is None:
            cfg.inner_lr = {"reptile": 0.1, "metasgd": 0.1, "mamlpp": 0.1}.get(
                cfg.algo, 0.01 if cfg.is_regression else 0.4)
            if cfg.algo == "reptile" and cfg.is_regression:
                cfg.inner_lr = 0.02
        if cfg.eval_inner_steps is None:
            cfg.eval_inner_steps = max(cfg.inner_steps, 3) if cfg.algo != "reptile" else 2 * cfg.inner_steps
        return cfg


def build_algorithm(cfg: FewShotConfig, image_shape: tuple[int, ...] | None = None) -> nn.Module:
    """The algorithm object of ``cfg.algo`` over a fresh registry backbone."""
    cfg = cfg.resolved()
    kwargs = dict(cfg.backbone_kwargs)
    if image_shape is not None and cfg.backbone != "mlp":
        kwargs.setdefault("in_channels", image_shape[0])
        kwargs.setdefault("image_size", image_shape[1])
    elif image_shape is not None and cfg.backbone == "mlp" and not cfg.is_regression:
        kwargs.setdefault("in_features", int(math.prod(image_shape)))
    if cfg.algo == "protonet":
        model = create_backbone(cfg.backbone, **kwargs)
        return ProtoNet(model)
    outputs = 1 if cfg.is_regression else cfg.train_ways
    if cfg.train_ways != cfg.ways and not cfg.is_regression and cfg.algo not in ANY_WAYS:
        raise ConfigError(
            f"train_ways={cfg.train_ways} differs from ways={cfg.ways}; only {' and '.join(ANY_WAYS)} can train "
            "and test with different numbers of classes"
        )
    model = create_backbone(cfg.backbone, num_classes=outputs, track_running_stats=False, **kwargs) \
        if cfg.backbone != "mlp" else create_backbone(cfg.backbone, num_classes=outputs, **kwargs)
    loss = "mse" if cfg.is_regression else "cross_entropy"
    common: dict[str, Any] = {"inner_lr": cfg.inner_lr, "inner_steps": cfg.inner_steps,
                              "eval_inner_steps": cfg.eval_inner_steps, "loss": loss}
    if cfg.algo == "mamlpp":
        common.update(msl_iterations=cfg.msl_iterations, first_order_until=cfg.first_order_until)
    return ALGORITHMS[cfg.algo](model, **common)


PseudoClasses = tuple[torch.Tensor, list[torch.Tensor]]  # pool images, index groups (meta.pseudoclasses)


def fewshot_data(cfg: FewShotConfig, pseudo: PseudoClasses | None = None
                 ) -> tuple[LabelledImages, dict[str, list[int]], str]:
    """The labelled images, the disjoint train/val/test class ids, and a note on the split.

    ``pseudo`` (pool images and index groups) adds one training class per group after the
    dataset's own classes (before Omniglot's rotated copies, so those are rotated too).
    """
    if cfg.dataset == "omniglot":
        return _omniglot_data(cfg, pseudo)
    if cfg.dataset == "glyphs":
        from mtl.data.glyphs import make_glyphs

        n_train, n_val, n_test = cfg.glyph_classes
        data = make_glyphs(n_train + n_val + n_test, samples_per_class=20, seed=0)
        ids = list(range(n_train + n_val + n_test))
        splits = {"train": ids[:n_train], "val": ids[n_train:n_train + n_val],
                  "test": ids[n_train + n_val:]}
        note = f"glyphs: {n_train}/{n_val}/{n_test} procedural classes (generator seed 0), 20 samples each"
        if pseudo is not None:
            from meta.pseudoclasses import append_classes

            data, new_ids = append_classes(data, *pseudo)
            splits["train"] = splits["train"] + new_ids
            note += _pseudo_note(pseudo)
        return data, splits, note
    raise ConfigError(f"dataset {cfg.dataset!r} has no images")


def _pseudo_note(pseudo: PseudoClasses) -> str:
    return f"; {len(pseudo[1])} pseudo-classes ({sum(len(g) for g in pseudo[1])} pool images)"


def _omniglot_subsets(root: Path) -> dict[str, bool]:
    """Which official Omniglot subsets are under ``root`` (as a zip or an extracted folder)."""
    return {name: any((root / f"images_{name}{ext}").exists() for ext in (".zip", ""))
            for name in ("background", "evaluation", "background_small1", "background_small2")}


def _omniglot_copies_reference(cfg: FewShotConfig) -> torch.Tensor:
    """Every labelled Omniglot image of ``cfg.root`` resized as the 28x28 sprite sheets are (bilinear),
    to find copies of them in a pseudo-class pool."""
    from mtl.data.omniglot import load_omniglot

    root = _omniglot_root(cfg)
    has = _omniglot_subsets(root)
    names = ("background", "evaluation") if has["background"] and has["evaluation"] else tuple(
        n for n in ("background_small1", "background_small2") if has[n])
    if not names:
        return torch.empty(0, 1, 28, 28)  # _omniglot_data then names what is missing
    return load_omniglot(root, subsets=names, resample="bilinear").images


def _omniglot_root(cfg: FewShotConfig) -> Path:
    """``cfg.root``, with the official zips fetched into it first under ``cfg.download``."""
    if cfg.root is None:
        raise ConfigError("dataset 'omniglot' needs --root PATH (a folder with the official Omniglot zips)")
    root = Path(cfg.root)
    if cfg.download and not any((root / f"images_{n}{e}").exists()
                                for n in ("background", "background_small1") for e in (".zip", "")):
        from mtl.data.omniglot import download_omniglot

        download_omniglot(root, ("background", "evaluation"))
    return root


def _omniglot_data(cfg: FewShotConfig, pseudo: PseudoClasses | None = None
                   ) -> tuple[LabelledImages, dict[str, list[int]], str]:
    from mtl.data.omniglot import SHARED_SUBSET_SPLIT, alphabet_split, load_omniglot

    root = _omniglot_root(cfg)
    has = _omniglot_subsets(root)
    if has["background"] and has["evaluation"]:
        data = load_omniglot(root, subsets=("background", "evaluation"))
        names = data.attribute_names["alphabet"]
        background = load_omniglot(root, subsets=("background",)).attribute_names["alphabet"]
        test = [a for a in names if a not in background]
        if pseudo is not None:  # their own alphabet, in training
            from meta.pseudoclasses import append_classes

            data, _ = append_classes(data, *pseudo)
        val = sorted(background)[-5:]
        splits = alphabet_split(data, test_alphabets=test, val_alphabets=val)
        note = "omniglot: Lake's split (evaluation alphabets for test), 5 background alphabets for validation"
    elif has["background_small1"] or has["background_small2"]:
        subsets = tuple(s for s in ("background_small1", "background_small2") if has[s])
        data = load_omniglot(root, subsets=subsets)
        if pseudo is not None:  # their own alphabet, which alphabet_split puts in training
            from meta.pseudoclasses import append_classes

            data, _ = append_classes(data, *pseudo)
        splits = alphabet_split(data, test_alphabets=SHARED_SUBSET_SPLIT["test"],
                                val_alphabets=SHARED_SUBSET_SPLIT["val"])
        note = ("omniglot small subsets: alphabet-disjoint split, test = "
                f"{', '.join(SHARED_SUBSET_SPLIT['test'])}, val = {', '.join(SHARED_SUBSET_SPLIT['val'])}")
    else:
        raise DatasetError(
            f"no Omniglot found under root={str(root)!r}: expected images_background(.zip) and "
            "images_evaluation(.zip), or images_background_small1/2(.zip)"
        )
    if pseudo is not None:
        note += _pseudo_note(pseudo)
    if cfg.rotations:
        from mtl.data.rotations import add_rotated_classes, expand_class_ids

        data = add_rotated_classes(data)
        splits = {"train": expand_class_ids(splits["train"], 4),
                  "val": [c * 4 for c in splits["val"]], "test": [c * 4 for c in splits["test"]]}
        note += "; 90-degree rotations as extra training classes"
    return data, splits, note


def shifted_episode(episode: Episode, pixels: int, key: tuple[int, int]) -> Episode:
    """``episode`` with every support and query image moved by up to ``pixels`` (:func:`random_shift`).

    The offsets depend only on ``key`` (seed, iteration), so a resumed run sees the same images.
    """
    return augmented_episode(episode, key, shift=pixels)


def augmented_episode(
    episode: Episode,
    key: tuple[int, int],
    shift: int = 0,
    rotate: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
) -> Episode:
    """``episode`` with every support and query image distorted (:func:`random_affine` with
    ``rotate``, ``scale``, ``shear``), then moved by up to ``shift`` pixels (:func:`random_shift`).

    The random draws depend only on ``key`` (seed, iteration), so a resumed run sees the same images;
    affine draws and shifts use separate streams, so adding one leaves the other unchanged.
    """
    shift_gen = torch.Generator().manual_seed(_derived_seed(*key, _SHIFT_STREAM) % 2**63)
    affine_gen = torch.Generator().manual_seed(_derived_seed(*key, _AFFINE_STREAM) % 2**63)

    def move(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, *x.shape[-3:])
        flat = random_affine(flat, affine_gen, degrees=rotate, scale=scale, shear=shear)
        return random_shift(flat, shift, shift_gen).view(x.shape)

    return dataclasses.replace(episode, support_x=move(episode.support_x), query_x=move(episode.query_x))


class TaskSources:
    """Fixed-by-index task sources for training, validation and test (``test_only``: test tasks
    only; ``validation_only``: validation tasks only, both without the pseudo-classes)."""

    def __init__(self, cfg: FewShotConfig, device: torch.device, test_only: bool = False,
                 pseudo: PseudoClasses | None = None, validation_only: bool = False) -> None:
        cfg = cfg.resolved()
        self.cfg = cfg
        self.device = device
        self.eval_batch = 25
        self.class_names: list[str] = []
        if cfg.is_regression:
            from mtl.data.sinusoid import SinusoidTasks

            self.note = "sinusoid: amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5] (Finn et al. 2017)"
            self.image_shape = None
            train, val, test = (SinusoidTasks(seed=s) for s in (cfg.seed, cfg.seed + 7919, TEST_SEED))
            k, q, b = cfg.shots, cfg.queries, cfg.meta_batch

            def span(i: int, n: int) -> range:
                return range(i * n, (i + 1) * n)

            self.train = lambda i: train.tasks(span(i, b), k, q).to(device)
            self.val = lambda i: val.tasks(span(i, self.eval_batch), k, q).to(device)
            self.test = lambda i: test.tasks(span(i, self.eval_batch), k, q).to(device)
            return
        from mtl.data.episodes import EpisodeSampler

        data, splits, self.note = fewshot_data(cfg, None if test_only or validation_only else pseudo)
        self.image_shape = data.image_shape
        self.splits = splits
        self.class_names = list(data.class_names)
        self.data = data
        if not validation_only:
            te = EpisodeSampler(data, cfg.ways, cfg.shots, cfg.queries, splits["test"], TEST_SEED, split="test")
            self.test = lambda i: te.batch(i, self.eval_batch).to(device)
        if test_only:
            return
        va = EpisodeSampler(data, cfg.val_ways, cfg.shots, cfg.queries, splits["val"], cfg.seed + 7919, split="val")
        self.val = lambda i: va.batch(i, self.eval_batch).to(device)
        if validation_only:
            return
        tr = EpisodeSampler(data, cfg.train_ways, cfg.shots, cfg.queries, splits["train"], cfg.seed, split="train")
        b = cfg.meta_batch
        if cfg.augments_images:
            self.train = lambda i: augmented_episode(
                tr.batch(i, b), (cfg.seed, i), shift=cfg.augment_shift, rotate=cfg.augment_rotate,
                scale=cfg.augment_scale, shear=cfg.augment_shear).to(device)
        else:
            self.train = lambda i: tr.batch(i, b).to(device)


def load_fewshot_checkpoint(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[FewShotConfig, nn.Module, tuple[int, ...] | None]:
    """Rebuild the algorithm of a ``fewshot train`` checkpoint: its config, the loaded algorithm, image shape."""
    from dataclasses import fields

    from mtl.errors import CheckpointError
    from mtl.utils import load_checkpoint

    state = load_checkpoint(path, map_location=device)
    extra = state.get("config", {}).get("extra", {}) if isinstance(state.get("config"), dict) else {}
    if "fewshot" not in extra or "algo" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} was not written by 'mtlmeta fewshot train'")
    known = {f.name for f in fields(FewShotConfig)}
    record = {k: v for k, v in extra["fewshot"].items() if k in known}
    record["glyph_classes"] = tuple(record.get("glyph_classes", (600, 100, 200)))
    cfg = FewShotConfig(**record)
    image_shape = tuple(extra.get("image_shape") or ()) or None
    algo = build_algorithm(cfg, image_shape)
    try:
        algo.load_state_dict(state["algo"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit its own configuration: {exc}") from exc
    return cfg, algo.to(device), image_shape


def load_fewshot_checkpoints(
    paths: list[str] | tuple[str, ...], device: torch.device | str = "cpu"
) -> tuple[FewShotConfig, nn.Module, tuple[int, ...] | None]:
    """One ``fewshot train`` checkpoint, or one ProtoNet over the embeddings of several ProtoNet checkpoints.

    The members' embeddings are concatenated (:class:`meta.protonet.EmbeddingEnsemble`), so the
    logits are the sum of the members' logits. All checkpoints must be ProtoNets on the same
    dataset and image shape; the returned config is the first one's. One path returns that
    checkpoint as :func:`load_fewshot_checkpoint` does, whatever its algorithm.
    """
    if not paths:
        raise ConfigError("checkpoints: give at least one")
    if len(set(map(str, paths))) != len(paths):
        raise ConfigError(f"checkpoints: each may be given once, got {[str(p) for p in paths]}")
    loaded = [load_fewshot_checkpoint(p, device) for p in paths]
    if len(loaded) == 1:
        return loaded[0]
    cfg0, _, shape0 = loaded[0]
    for p, (cfg, _, shape) in zip(paths, loaded):
        if cfg.algo != "protonet":
            raise ConfigError(f"an ensemble of checkpoints must be ProtoNets; {str(p)!r} is {cfg.algo}")
        if (cfg.dataset, shape) != (cfg0.dataset, shape0):
            raise ConfigError(f"an ensemble's checkpoints must share dataset and image shape; {str(p)!r} has "
                              f"{cfg.dataset} {shape}, {str(paths[0])!r} has {cfg0.dataset} {shape0}")
    members = [algo.model for _, algo, _ in loaded]
    return cfg0, ProtoNet(EmbeddingEnsemble(members)).to(device), shape0


_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")  # MAML's BatchNorm keeps none


def _read_init(path: str) -> Any:
    """The weights of ``--init``: a named/transfer checkpoint, a state dict, or a ``fewshot train`` checkpoint."""
    from mtl.transfer.checkpoints import NamedCheckpoint, read_named_checkpoint
    from mtl.utils import load_checkpoint

    if not Path(path).is_file():
        raise ConfigError(f"init must be a checkpoint file, got {path!r} (not found)")
    if not path.endswith(".safetensors"):
        state = load_checkpoint(path)
        algo = state.get("algo") if isinstance(state, dict) else None
        if isinstance(algo, dict) and any(k.startswith("model.") for k in algo):  # a fewshot checkpoint
            model = {k[len("model."):]: v for k, v in algo.items() if k.startswith("model.")}
            extra = state.get("config", {}).get("extra", {}) if isinstance(state.get("config"), dict) else {}
            built = extra.get("fewshot", {}) if isinstance(extra, dict) else {}
            meta = {k: built[k] for k in ("backbone", "backbone_kwargs") if k in built}
            return NamedCheckpoint(model, meta, path)
    return read_named_checkpoint(path)


def _make_pseudo_classes(cfg: FewShotConfig, log: Callable[[str], None]) -> PseudoClasses:
    """Cluster ``cfg.pseudo_pool`` into extra training classes with the network of ``pseudo_embed``/``init``.

    Runs before training (also on ``--resume``, where it gives the same classes: every step is
    deterministic), on the CPU, outside the training budget (seconds; logged).
    """
    from meta.pseudoclasses import drop_copies, embed_images, load_pool, pseudo_classes

    start = time.process_time()
    source = cfg.pseudo_embed or cfg.init
    assert source is not None and cfg.pseudo_pool is not None
    ckpt = _read_init(source)
    shape = (1, 28, 28)  # both image datasets (omniglot, glyphs) are 28x28 grayscale
    pool = load_pool(cfg.pseudo_pool.split(os.pathsep), shape)
    copies = ""
    if cfg.dataset == "omniglot":  # the sprite sheets hold every Omniglot image, test alphabets included
        pool, dropped = drop_copies(pool, _omniglot_copies_reference(cfg))
        if not len(pool):
            raise DatasetError(f"pseudo pool {cfg.pseudo_pool!r}: every image is a copy of a labelled Omniglot "
                               "image; nothing is left to cluster")
        copies = f"; {int(dropped.sum())} copies of labelled images removed first"
    stats = any(n.endswith("running_mean") for n in ckpt.state_dict)
    # the network as the checkpoint was trained (a fewshot checkpoint records it), else as this run builds it
    name = ckpt.metadata.get("backbone") or cfg.backbone or "conv4"
    kwargs = {k: v for k, v in ckpt.metadata.get("backbone_kwargs", cfg.backbone_kwargs).items()
              if k not in ("in_channels", "image_size", "track_running_stats", "num_classes")}
    net = create_backbone(name, in_channels=shape[0], image_size=shape[1], track_running_stats=stats, **kwargs)
    _load_init(net, ckpt)  # the same fit rules as --init (a head in the checkpoint is ignored)
    groups = pseudo_classes(embed_images(net, pool), cfg.pseudo_classes, size=cfg.pseudo_size,
                            min_size=cfg.shots + cfg.queries, seed=cfg.seed)
    if not groups:
        raise DatasetError(f"no pseudo-classes: every one of the {cfg.pseudo_classes} clusters of "
                           f"{cfg.pseudo_pool} has fewer than shots + queries = {cfg.shots + cfg.queries} images")
    sizes = [len(g) for g in groups]
    log(f"pseudo-classes: {len(groups)} of {cfg.pseudo_classes} clusters kept ({min(sizes)}-{max(sizes)} images, "
        f"{sum(sizes)} of {len(pool)} in {cfg.pseudo_pool}{copies}), embedded by {source}, "
        f"{time.process_time() - start:.0f} CPU-s")
    return pool, groups


def _load_init(algo: nn.Module, ckpt: Any) -> str:
    """Copy the matching tensors of ``ckpt`` into ``algo.model``; a head of another shape keeps its init."""
    from mtl.transfer.checkpoints import check_init_backbone, load_partial

    model = getattr(algo, "model", algo)
    check_init_backbone(model, ckpt)
    try:
        report = load_partial(model, ckpt, on_shape_mismatch="skip")
    except ConfigError as exc:
        raise ConfigError(f"init {ckpt.path!r} does not fit the {getattr(model, 'backbone_name', 'model')}: "
                          f"{exc}") from None
    misfits = [n for n in (*report.missing, *report.unexpected, *(m[0] for m in report.shape_mismatched))
               if not n.startswith("head.") and not n.endswith(_BN_STATS)]
    if misfits:
        from mtl.errors import CheckpointError

        raise CheckpointError(f"init {ckpt.path!r} does not fit the {getattr(model, 'backbone_name', 'model')} "
                              f"outside its head: {', '.join(misfits[:4])}{' ...' if len(misfits) > 4 else ''} "
                              "missing, unexpected or of another shape")
    return report.summary()


def zero_head(algo: nn.Module) -> str:
    """Set the meta-learned head of ``algo.model`` to zero; returns what was zeroed.

    A head initialisation that is the same for every class suits N-way tasks whose class order is
    random (Ye & Chao 2022, "How to Train Your MAML to Excel in Few-Shot Classification"); from
    zero, one inner step of cross-entropy gives each class's weights the direction of its support
    embeddings minus the mean support embedding (a dot-product prototype head).
    """
    head = getattr(getattr(algo, "model", algo), "head", None)
    params = dict(head.named_parameters()) if isinstance(head, nn.Module) else {}
    if not params:
        raise ConfigError(f"zero_head needs a model with a head; {type(algo).__name__} has none")
    with torch.no_grad():
        for p in params.values():
            p.zero_()
    return ", ".join(f"head.{n} {tuple(p.shape)}" for n, p in params.items())


def run_fewshot(
    cfg: FewShotConfig,
    budget: Budget,
    out_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Meta-train, keep the best validation checkpoint, evaluate on ``test_tasks`` held-out tasks."""
    cfg = cfg.resolved()
    check_new_output(json_path, overwrite, what="--json")
    out = prepare_out_dir(out_dir, resume=resume, overwrite=overwrite) if out_dir is not None else None
    if resume and (out is None or not (out / "last.pt").is_file()):
        raise ConfigError(f"--resume needs a previous run in --out, but {str(out_dir)!r} has no last.pt")
    init = _read_init(cfg.init) if cfg.init is not None and not resume else None
    seed_everything(cfg.seed)
    dev = resolve_device(device)
    pseudo = _make_pseudo_classes(cfg, log) if cfg.pseudo_pool is not None else None
    tasks = TaskSources(cfg, dev, pseudo=pseudo)
    algo = build_algorithm(cfg, tasks.image_shape)
    if init is not None:
        log(f"--init {cfg.init}: {_load_init(algo, init)}")
    if cfg.zero_head and not resume:
        log(f"head starts at zero: {zero_head(algo)}")
    record = asdict(cfg)
    record["glyph_classes"] = list(cfg.glyph_classes)
    # not part of the run's identity (precision is: the trainer's configuration records it)
    for key in ("snapshot_seconds", "download", "task_workers", "precision"):
        record.pop(key, None)
    if cfg.val_ways == cfg.ways:  # the identity of runs made before the option
        record.pop("val_ways")
    if not cfg.zero_head:  # likewise
        record.pop("zero_head")
    if cfg.algo != "mamlpp":  # likewise
        record.pop("msl_iterations")
        record.pop("first_order_until")
    if cfg.pseudo_pool is None:  # runs without a pool keep the identity of runs made before the option
        for key in ("pseudo_pool", "pseudo_classes", "pseudo_size", "pseudo_embed"):
            record.pop(key)
    trainer = MetaTrainer(
        algo, tasks.train, tasks.val,
        MetaTrainerConfig(meta_lr=cfg.meta_lr, schedule=cfg.schedule, schedule_iterations=cfg.schedule_iterations,
                          validate_every=cfg.validate_every,
                          validation_tasks=cfg.validation_tasks, checkpoint_every=cfg.checkpoint_every,
                          snapshot_seconds=tuple(cfg.snapshot_seconds), validate_at_start=cfg.init is not None,
                          task_workers=cfg.task_workers, precision=cfg.precision,
                          progress=progress, extra={"fewshot": record,
                                                    "image_shape": list(tasks.image_shape or [])}),
        out_dir=out, device=dev, higher_is_better=not cfg.is_regression,
    )
    if resume:
        assert out is not None
        trainer.resume(out / "last.pt")
        log(f"resumed from {out / 'last.pt'} at iteration {trainer.iteration}")
    log(f"{cfg.algo} on {tasks.note}; {cfg.ways}-way {cfg.shots}-shot, backbone {cfg.backbone}, device {dev}")
    if cfg.precision == "bf16":
        speed = "" if bf16_is_native(dev) else " (this device has no bfloat16 hardware: expect it to be slower)"
        log(f"meta-updates in bfloat16 autocast, validation and test in float32{speed}")
    if cfg.algo == "mamlpp":
        steps = f"{cfg.inner_steps} inner step{'s' if cfg.inner_steps != 1 else ''}"
        log(f"MAML++: {steps} from lr {cfg.inner_lr} (learned per layer and step), "
            f"multi-step loss annealed over {cfg.msl_iterations} iterations, first order before iteration "
            f"{cfg.first_order_until}")
    cpu_start = time.process_time()
    summary = trainer.fit(budget)
    train_cpu_seconds = time.process_time() - cpu_start
    if not dist_utils.is_main_process():  # under torchrun only rank 0 tests and reports
        return {"meta_iterations": summary["meta_iterations"], "rank": dist_utils.rank()}
    trainer.load_best()
    start = time.perf_counter()
    result = evaluate(trainer.algo, tasks.test, num_tasks=cfg.test_tasks, progress=progress, desc="test tasks",
                      workers=cfg.task_workers)
    eval_seconds = time.perf_counter() - start
    metric = "mse" if cfg.is_regression else "accuracy"
    out_json = {
        "algorithm": cfg.algo, "dataset": cfg.dataset, "backbone": cfg.backbone, "ways": cfg.ways,
        "shots": cfg.shots, "queries": cfg.queries, "meta_batch": cfg.meta_batch,
        "inner_steps": cfg.inner_steps, "eval_inner_steps": cfg.eval_inner_steps, "inner_lr": cfg.inner_lr,
        "meta_iterations": summary["meta_iterations"], "train_seconds": round(summary["train_seconds"], 2),
        "train_cpu_seconds_this_process": round(train_cpu_seconds, 1), "threads": torch.get_num_threads(),
        "best_iteration": summary["best_iteration"], "test_tasks": int(result["num_tasks"]),
        metric: result.get(metric, result.get("loss")), "ci95": result["ci95"],
        "tasks_per_second": result["tasks_per_second"], "eval_seconds": round(eval_seconds, 2),
        "split": tasks.note, "seed": cfg.seed, "precision": cfg.precision,
        "checkpoint": str(out / "best.pt") if out is not None and (out / "best.pt").exists() else None,
    }
    if json_path is not None:
        atomic_write_json(json_path, out_json)
    if out is not None:
        atomic_write_json(out / "result.json", out_json)
    return out_json
