"""Pseudo-classes: extra training classes made by clustering an unlabelled image pool.

Few-shot accuracy grows with the number of training classes. An unlabelled pool of images from
other classes (for Omniglot: the evaluation sheet of the 28x28 sprite sheets, whose alphabets are
disjoint from every background alphabet) can add classes: embed the pool with a trained
few-shot network, cluster the embeddings with k-means, keep for each cluster the images nearest
its centre, and train on those clusters as if they were labelled classes. This is the
clustering-as-labels idea of CACTUs (Hsu, Levine and Finn 2019, "Unsupervised Learning via
Meta-Learning") used next to the labelled classes, as in semi-supervised few-shot learning
(Ren et al. 2018).

Library use::

    pool = load_pool("omniglot28/images_evaluation.png", (1, 28, 28))
    emb = embed_images(embedding_net, pool)
    groups = pseudo_classes(emb, k=659, size=20, min_size=6)    # lists of pool indices
    data, new_ids = append_classes(data, pool, groups)            # new class ids at the end

CLI: ``mtlmeta fewshot train ... --init CKPT --pseudo-pool PATH --pseudo-classes K``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meta.functional import forward_plan
from mtl.data.base import LabelledImages
from mtl.errors import ConfigError, DatasetError

__all__ = ["DUPLICATE_DISTANCE", "append_classes", "drop_copies", "embed_images", "kmeans", "load_pool",
           "pseudo_classes"]

DUPLICATE_DISTANCE = 0.75
"""Largest L2 distance (28x28 images in [0, 1]) at which a pool image counts as a copy of a labelled
one. Each of the 4,840 labelled images of the two small Omniglot subsets, resized as the 28x28 sprite
sheets are (bilinear, ``load_omniglot(..., resample="bilinear")``), lies within 0.50 of exactly one
tile of the background sheet; the next-nearest tile of any of them is 1.11 or farther."""


def load_pool(path: str | Path | Sequence[str | Path], image_shape: tuple[int, int, int]) -> Tensor:
    """The unlabelled pool at ``path``: a ``.png`` sprite sheet of 28x28 tiles, 20 per row
    (:func:`mtl.data.load_sprite_sheet`), or a folder of images (each resized to ``image_shape``,
    dark-on-light pages inverted as ``fewshot predict`` does); a sequence of such paths is one pool,
    in the given order. Returns ``[N, C, H, W]`` in [0, 1]."""
    from meta.images import IMAGE_SUFFIXES, load_image
    from mtl.data.sprites import load_sprite_sheet

    if not isinstance(path, (str, Path)):
        paths = list(path)
        if not paths:
            raise DatasetError("pseudo pool: no path given")
        return torch.cat([load_pool(q, image_shape) for q in paths])
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"pseudo pool folder {str(p)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return torch.stack([load_image(f, image_shape) for f in files])
    if p.suffix.lower() != ".png":
        raise DatasetError(f"pseudo pool {str(p)!r} must be a .png sprite sheet or a folder of images")
    pool = load_sprite_sheet(p)
    if tuple(pool.shape[1:]) != tuple(image_shape):
        raise DatasetError(f"pseudo pool {str(p)!r} has {tuple(pool.shape[1:])} images, the dataset "
                           f"{tuple(image_shape)}")
    return pool


@torch.no_grad()
def drop_copies(pool: Tensor, reference: Tensor, max_distance: float = DUPLICATE_DISTANCE,
                chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """``pool`` without the images within ``max_distance`` (L2 over all pixels) of any ``reference``
    image, and the boolean mask of the dropped ones.

    Guards against leakage: an unlabelled pool gathered from the same source as a labelled data set
    (the Omniglot sprite sheets hold every Omniglot image, test alphabets included) must not bring
    validation or test images, or second copies of training images, into training.
    """
    if not (max_distance >= 0):
        raise ConfigError(f"max_distance must be >= 0, got {max_distance!r}")
    if pool.shape[1:] != reference.shape[1:]:
        raise DatasetError(f"pool images are {tuple(pool.shape[1:])}, the reference's {tuple(reference.shape[1:])}")
    ref = reference.flatten(1).float()
    dropped = torch.zeros(len(pool), dtype=torch.bool)
    if len(ref):
        for i in range(0, len(pool), chunk):
            block = pool[i:i + chunk].flatten(1).float()
            dropped[i:i + chunk] = torch.cdist(block, ref).amin(1) <= max_distance
    return pool[~dropped], dropped


@torch.no_grad()
def embed_images(model: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """Embeddings ``[N, D]`` of ``images`` by ``model`` in eval mode (BatchNorm on running statistics
    where it keeps them), computed as :class:`meta.protonet.ProtoNet` embeds; the mode is restored."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        plan = forward_plan(model)
        params = dict(model.named_parameters())
        out = []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size]
            y = plan(params, x, running_stats="module") if plan is not None else model(x)
            out.append(y.flatten(1))
        return torch.cat(out)
    finally:
        model.train(was_training)


def kmeans(x: Tensor, k: int, iterations: int = 25, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on the rows of ``x`` from ``k`` distinct rows drawn with ``seed``.

    Returns (assignment ``[N]``, distances ``[N, k]`` to the final centres). A centre that loses
    all its points stays where it was. Deterministic for a given input, ``seed`` and thread count.
    """
    if not 1 <= k <= len(x):
        raise ConfigError(f"k must be in 1..{len(x)} (the number of points), got {k}")
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iterations):
        assign = torch.cdist(x, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    dist = torch.cdist(x, centres)
    return dist.argmin(1), dist


def pseudo_classes(embeddings: Tensor, k: int, size: int = 20, min_size: int = 2, seed: int = 0,
                   iterations: int = 25) -> list[Tensor]:
    """Cluster L2-normalised ``embeddings`` into ``k`` groups (:func:`kmeans`); keep each group's
    ``size`` members nearest its centre, and the groups with at least ``min_size`` members.

    Returns index tensors into ``embeddings``, in cluster order, each sorted by distance to its
    centre (CACTUs, Hsu et al. 2019, with centre-nearest members as the purer part of a cluster).
    """
    for name, value in (("size", size), ("min_size", min_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if min_size > size:
        raise ConfigError(f"min_size={min_size} is larger than size={size}")
    assign, dist = kmeans(F.normalize(embeddings, dim=1), k, iterations, seed)
    groups = []
    for j in range(k):
        members = (assign == j).nonzero().flatten()
        if len(members) < min_size:
            continue
        groups.append(members[dist[members, j].argsort()[:size]])
    return groups


def append_classes(data: LabelledImages, pool: Tensor, groups: Sequence[Tensor],
                   alphabet: str = "pseudo") -> tuple[LabelledImages, list[int]]:
    """``data`` with one new class per group of ``pool`` images, after the existing classes.

    New classes are named ``"<alphabet>/<i>"``; an ``alphabet`` attribute (if ``data`` has one) gets
    the new value ``alphabet``, other attributes 0. Returns the new data set and the new class ids.
    """
    if not groups:
        raise DatasetError("no pseudo-classes to add (every cluster was smaller than the minimum size)")
    if tuple(pool.shape[1:]) != tuple(data.image_shape):
        raise DatasetError(f"pool images are {tuple(pool.shape[1:])}, the dataset's {tuple(data.image_shape)}")
    first = data.num_classes
    index = torch.cat(list(groups))
    targets = torch.cat([torch.full((len(g),), first + i, dtype=torch.long) for i, g in enumerate(groups)])
    attributes, names = {}, dict(data.attribute_names)
    for key, value in data.attributes.items():
        fill = 0
        if key == "alphabet":
            fill = len(names.get(key, []))
            names[key] = [*names.get(key, []), alphabet]
        attributes[key] = torch.cat([value, torch.full((len(index),), fill, dtype=value.dtype)])
    out = LabelledImages(torch.cat([data.images, pool[index].to(data.images.dtype)]),
                         torch.cat([data.targets, targets]),
                         [*data.class_names, *(f"{alphabet}/{i}" for i in range(len(groups)))],
                         attributes, names)
    return out, list(range(first, first + len(groups)))
