"""Prototypical Networks (Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot Learning").

A class is represented by the mean embedding (prototype) of its support examples; a query is
classified by a softmax over negative squared Euclidean distances to the prototypes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from meta.functional import AdaptedPredictor, as_float, check_task_batch, forward_plan
from mtl.data.augment import check_test_rotate, check_test_shift, tta_views
from mtl.errors import ConfigError

__all__ = ["EmbeddingEnsemble", "ProtoNet", "prototypes", "prototype_logits", "soft_kmeans_prototypes",
           "within_class_whitening"]

_DISTANCES = ("euclidean", "cosine")


def prototypes(embeddings: Tensor, labels: Tensor) -> Tensor:
    """Class prototypes ``[N, D]``: the mean embedding of each class ``0..N-1`` (Snell et al. 2017, eq. 1).

    ``N`` is ``labels.max() + 1``; every class must have at least one example, else
    :class:`ConfigError` names the missing ones.
    """
    if labels.is_floating_point() or labels.is_complex() or labels.dim() != 1:
        raise ConfigError(f"support_y must be a 1-D tensor of integer class labels, got dtype "
                          f"{labels.dtype} shape {tuple(labels.shape)}")
    if int(labels.min()) < 0:
        raise ConfigError(f"support_y labels must be in 0..N-1, got {int(labels.min())}")
    n = int(labels.max()) + 1
    onehot = F.one_hot(labels, n).to(embeddings.dtype)  # [S, N]
    counts = onehot.sum(0)
    if bool((counts == 0).any()):
        missing = [i for i in range(n) if counts[i] == 0]
        raise ConfigError(f"support_y must contain every class 0..{n - 1}; missing {missing}")
    return onehot.t() @ embeddings / counts.unsqueeze(1)


def prototype_logits(
    queries: Tensor, protos: Tensor, distance: str = "euclidean", cosine_scale: float = 10.0
) -> Tensor:
    """Logits ``[Q, N]`` of queries ``[Q, D]`` against prototypes ``[N, D]`` (Snell et al. 2017, eq. 2).

    ``"euclidean"``: negative squared Euclidean distances (the paper's choice);
    ``"cosine"``: ``cosine_scale`` times cosine similarity (the scale keeps the softmax from
    being nearly uniform, since cosines lie in [-1, 1]).
    """
    if distance == "euclidean":
        return -(queries.unsqueeze(1) - protos.unsqueeze(0)).pow(2).sum(-1)
    if distance == "cosine":
        return cosine_scale * F.normalize(queries, dim=-1) @ F.normalize(protos, dim=-1).t()
    raise ConfigError(f"distance must be one of {list(_DISTANCES)}, got {distance!r}")


def check_transductive_steps(steps: object) -> int:
    """Return ``steps``, raising :class:`ConfigError` unless it is an integer in 0..100."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= 100:
        raise ConfigError(f"transductive_steps must be an integer in 0..100, got {steps!r}")
    return steps


def soft_kmeans_prototypes(
    support: Tensor, support_y: Tensor, queries: Tensor, steps: int, distance: str = "euclidean",
    cosine_scale: float = 10.0,
) -> Tensor:
    """Prototypes ``[N, D]`` refined with unlabelled queries ``[Q, D]`` by soft k-means (Ren et al. 2018,
    "Meta-Learning for Semi-Supervised Few-Shot Classification", eq. 4), repeated ``steps`` times.

    Starting from the support prototypes, each step assigns every query to the classes with the
    softmax of its logits (:func:`prototype_logits`) and moves each prototype to the mean of its
    support embeddings and the queries, weighted by those assignments (the support examples
    weigh 1). ``steps=0`` gives :func:`prototypes`. This is transductive: every query's label
    depends on the other queries of the batch.
    """
    protos = prototypes(support, support_y)
    if steps == 0:  # the inductive case, every training episode: nothing more to compute
        return protos
    counts = torch.bincount(support_y, minlength=protos.shape[0]).to(protos.dtype)
    sums = protos * counts[:, None]
    for _ in range(steps):
        weights = prototype_logits(queries, protos, distance, cosine_scale).softmax(-1)
        protos = (sums + weights.t() @ queries) / (counts + weights.sum(0))[:, None]
    return protos


def check_shrinkage(shrinkage: object) -> float:
    """Return ``shrinkage`` as a float, raising :class:`ConfigError` unless it is a number in [0, 1]."""
    if isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float)) or not 0 <= shrinkage <= 1:
        raise ConfigError(f"shrinkage must be a number in [0, 1], got {shrinkage!r}")
    return float(shrinkage)


def within_class_whitening(embeddings: Tensor, labels: Tensor, shrinkage: float) -> Tensor:
    """The matrix ``W = S^(-1/2)`` ``[D, D]`` that makes squared Euclidean distances of ``x @ W`` the
    squared Mahalanobis distances under ``S``, the pooled within-class covariance of ``embeddings``
    ``[N, D]`` (classes given by ``labels`` ``[N]``) shrunk towards a multiple of the identity:
    ``S = (1 - shrinkage) * C + shrinkage * trace(C) / D * I``.

    For a prototype classifier this is linear discriminant analysis with a covariance estimated
    on other classes (the training classes): directions in which drawings of one character vary
    count less than those in which characters differ. The squared Mahalanobis distance is a
    Bregman divergence, so the class mean stays the right prototype (Snell et al. 2017, Section
    2.3); Bateni et al. 2020 ("Simple CNAPS") classify with Mahalanobis distances of
    shrunk covariances too (estimated from each task). Computed in float64; returned in the
    dtype of ``embeddings``.
    """
    shrinkage = check_shrinkage(shrinkage)
    if embeddings.dim() != 2 or labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ConfigError(f"embeddings [N, D] and labels [N] must match, got {tuple(embeddings.shape)} and "
                          f"{tuple(labels.shape)}")
    classes, index = labels.unique(return_inverse=True)
    n, d = embeddings.shape
    if n - len(classes) < 1:
        raise ConfigError(f"a within-class covariance needs a class with two or more examples; got {n} "
                          f"examples of {len(classes)} classes")
    x = embeddings.detach().double()
    means = torch.zeros(len(classes), d, dtype=x.dtype, device=x.device).index_add_(0, index, x)
    means /= torch.bincount(index, minlength=len(classes)).to(x.dtype)[:, None]
    centred = x - means[index]
    cov = centred.t() @ centred / (n - len(classes))
    scale = cov.trace() / d
    if not scale > 0:
        raise ConfigError("the embeddings do not vary within any class: no covariance to whiten with")
    cov = (1 - shrinkage) * cov + shrinkage * scale * torch.eye(d, dtype=x.dtype, device=x.device)
    values, vectors = torch.linalg.eigh(cov)
    if not values.min() > 1e-10 * scale:
        raise ConfigError(f"the within-class covariance is singular ({d} dimensions, {n} examples of "
                          f"{len(classes)} classes); use a shrinkage > 0")
    return (vectors * values.rsqrt()) @ vectors.t()


def _flat_embedding(model: nn.Module, params: Mapping[str, Tensor] | None, x: Tensor) -> Tensor:
    """``model(x)`` (with ``params`` if given) flattened to vectors; through the model's forward
    plan when it has one (the same function, faster on CPU; BatchNorm as the module's mode says)."""
    plan = forward_plan(model)
    if plan is not None:
        p = dict(model.named_parameters()) if params is None else params
        return plan(p, x, running_stats="module").flatten(1)
    out = model(x) if params is None else functional_call(model, dict(params), (x,))
    return out.flatten(1)


class EmbeddingEnsemble(nn.Module):
    """Several embedding networks as one: the concatenation of their flattened outputs.

    Under a :class:`ProtoNet` with the squared Euclidean distance, the distance between two
    concatenated embeddings is the sum of the members' distances, so the ensemble's logits are
    the sum of the members' logits: the class probabilities are the normalised product of the
    members' (a product of experts; Dvornik et al. 2019, "Diversity with Cooperation", study
    ensembles of few-shot embeddings and average probabilities instead). Members keep their
    own modes and BatchNorm statistics; each runs through its forward plan when it has one.

    Args:
        members: the embedding networks (headless registry backbones, at least one). They must
            take the same input; their outputs may differ in size.
    """

    def __init__(self, members: list[nn.Module] | tuple[nn.Module, ...]) -> None:
        super().__init__()
        if not isinstance(members, (list, tuple)) or not members:
            raise ConfigError(f"members must be a non-empty list of embedding networks, got {members!r}")
        for i, m in enumerate(members):
            if not isinstance(m, nn.Module):
                raise ConfigError(f"members[{i}] must be a torch.nn.Module, got {type(m).__name__}")
            if getattr(m, "head", None) is not None:
                raise ConfigError(f"members[{i}] must be a headless embedding network, got a head with "
                                  f"{getattr(m, 'num_classes', '?')} outputs")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        # under functional_call, each member's named_parameters() are the ones passed in
        return torch.cat([_flat_embedding(m, None, x) for m in self.members], dim=1)


class _EmbeddingCache:
    """Embeddings of images already seen, keyed by their bytes; valid while the network's
    parameters and buffers are unchanged (checked by their in-place version counters)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.table: dict[bytes, Tensor] = {}
        self.versions = self._versions()
        self.hits = self.misses = 0

    def _versions(self) -> tuple[int, ...]:
        tensors = [*self.module.parameters(), *self.module.buffers()]
        return tuple(t._version for t in tensors)

    def lookup(self, x: Tensor, embed: Callable[[Tensor], Tensor]) -> Tensor:
        """``embed(x)``, computing it only for the rows of ``x`` not seen before."""
        versions = self._versions()
        if versions != self.versions:  # the network changed: every stored embedding is stale
            self.table.clear()
            self.versions = versions
        head = f"{tuple(x.shape[1:])}{x.dtype}".encode()
        raw = x.detach().cpu().contiguous().flatten(1).view(torch.uint8).numpy()
        keys = [head + row.tobytes() for row in raw]
        fresh: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self.table:
                fresh.setdefault(k, i)
        if fresh:
            rows = torch.tensor(list(fresh.values()), device=x.device)
            for k, e in zip(fresh, embed(x.index_select(0, rows))):
                self.table[k] = e
        self.misses += len(fresh)
        self.hits += len(keys) - len(fresh)
        return torch.stack([self.table[k] for k in keys])


class ProtoNet(nn.Module):
    """Prototypical Networks (Snell et al. 2017) on a headless registry backbone.

    Args:
        model: an embedding network, e.g. ``create_backbone("conv4")`` (no ``num_classes``).
            Its outputs are flattened to vectors.
        distance: ``"euclidean"`` (squared, as in the paper) or ``"cosine"``.
        cosine_scale: multiplier of cosine similarities for ``distance="cosine"`` (> 0).
        test_shift: test-time augmentation (0: off, at most 4): in eval mode every image (support
            and query) is embedded as the mean embedding of its ``(2 * test_shift + 1) ** 2``
            copies moved by up to ``test_shift`` pixels in x and y (circular shifts, which equal
            plain shifts for images with empty borders such as Omniglot's). Training is unchanged.
            It costs that many times the embedding work at test time.
        test_rotate: test-time rotations (0: off, at most 45 degrees): in eval mode every image is
            also embedded rotated by ``-test_rotate`` and ``+test_rotate`` degrees
            (:func:`mtl.data.rotate`), three times the views; with ``test_shift`` every shifted
            copy is rotated too.
        whitening: a fixed ``[D, D]`` matrix applied to every embedding in eval mode before the
            distances (default ``None``: off): with :func:`within_class_whitening` the squared
            Euclidean distance becomes a squared Mahalanobis distance. :meth:`fit_whitening`
            sets it from labelled images of other classes (e.g. the training classes). Training
            is unchanged; the matrix is not part of the state dict.
        transductive_steps: in eval mode, refine the prototypes with the task's queries by this
            many soft k-means steps (:func:`soft_kmeans_prototypes`, Ren et al. 2018) before
            classifying them (0, the default: off, the inductive ProtoNet of the paper). This is a
            transductive test: it assumes the queries are a batch of the support classes (the
            protocol's 15 per class), and every query's label depends on the others. Training is
            unchanged.

    The model is used as an ordinary module: in train mode BatchNorm uses batch statistics and
    updates its running statistics (if it tracks them), in eval mode it uses them, as in
    standard ProtoNet training. :func:`meta.evaluation.evaluate` switches to eval mode.
    Each task's support and query examples are embedded in one forward pass, as in the paper.
    """

    def __init__(self, model: nn.Module, distance: str = "euclidean", cosine_scale: float = 10.0,
                 test_shift: int = 0, test_rotate: float = 0.0, transductive_steps: int = 0,
                 whitening: Tensor | None = None) -> None:
        super().__init__()
        self.transductive_steps = check_transductive_steps(transductive_steps)
        self.test_shift = check_test_shift(test_shift)
        self.test_rotate = check_test_rotate(test_rotate)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if distance not in _DISTANCES:
            raise ConfigError(f"distance must be one of {list(_DISTANCES)}, got {distance!r}")
        if isinstance(cosine_scale, bool) or not isinstance(cosine_scale, (int, float)) or not (
            cosine_scale > 0 and cosine_scale != float("inf")
        ):
            raise ConfigError(f"cosine_scale must be a finite number > 0, got {cosine_scale!r}")
        if getattr(model, "head", None) is not None:
            raise ConfigError("ProtoNet needs a headless backbone (create it without num_classes), "
                              f"got a head with {getattr(model, 'num_classes', '?')} outputs")
        self.model = model
        self.distance = distance
        self.cosine_scale = float(cosine_scale)
        self.adapt_needs_grad = False  # adapt() computes prototypes: no inner loop to differentiate
        self._cache: _EmbeddingCache | None = None
        if whitening is not None and (not isinstance(whitening, Tensor) or whitening.dim() != 2
                                      or whitening.shape[0] != whitening.shape[1]):
            got = tuple(whitening.shape) if isinstance(whitening, Tensor) else type(whitening).__name__
            raise ConfigError(f"whitening must be a square [D, D] tensor or None, got {got}")
        self.whitening = whitening

    def fit_whitening(self, images: Tensor, labels: Tensor, shrinkage: float, batch_size: int = 500) -> Tensor:
        """Set :attr:`whitening` to :func:`within_class_whitening` of the embeddings of ``images``
        (labelled by ``labels``; classes other than the test's, e.g. the training classes).

        The images are embedded as the test embeds them (eval mode, with the test-time views);
        ``whitening`` is cleared first, so refitting does not compound. Returns the matrix.
        """
        check_shrinkage(shrinkage)
        if images.shape[0] != labels.shape[0]:
            raise ConfigError(f"images and labels must have the same length, got {images.shape[0]} and "
                              f"{labels.shape[0]}")
        was_training = self.training
        self.whitening = None
        self.train(False)
        try:
            with torch.no_grad():
                emb = torch.cat([self._embed_shifted(None, images[i:i + batch_size])
                                 for i in range(0, images.shape[0], batch_size)])
        finally:
            self.train(was_training)
        self.whitening = within_class_whitening(emb, labels.to(emb.device), shrinkage)
        return self.whitening

    def _whiten(self, emb: Tensor) -> Tensor:
        if self.whitening is None or self.training:
            return emb
        return emb @ self.whitening.to(emb.dtype)

    @contextmanager
    def embedding_cache(self) -> Iterator[_EmbeddingCache]:
        """Within the block, embed each distinct image once when evaluating.

        In eval mode the embedding of an image is a function of the image alone (BatchNorm
        uses its running statistics; the test-time views are fixed), so a test of 600 tasks
        drawn from the same few hundred images needs each image's (view-averaged) embedding only
        once. Images are recognised by their bytes; the stored embeddings are dropped whenever
        the network's parameters or buffers change in place (an optimizer step), and the cache
        is bypassed in train mode and when gradients are recorded. :func:`meta.evaluation.evaluate`
        uses it. The results equal those without the cache up to float rounding (a batch of
        other composition). Yields the cache (``hits`` and ``misses`` count the images looked up).
        """
        if self._cache is not None:  # nested: keep the outer block's cache
            yield self._cache
            return
        self._cache = _EmbeddingCache(self.model)
        try:
            yield self._cache
        finally:
            self._cache = None

    def _embed(self, params: Mapping[str, Tensor] | None, x: Tensor) -> Tensor:
        return _flat_embedding(self.model, params, x)

    @property
    def _test_views(self) -> bool:
        return not self.training and (self.test_shift > 0 or self.test_rotate > 0)

    def _embed_shifted(self, params: Mapping[str, Tensor] | None, x: Tensor) -> Tensor:
        """:meth:`_embed_views`, through the embedding cache when one is active and applies."""
        cache = self._cache
        if cache is not None and params is None and not self.training and not torch.is_grad_enabled():
            return cache.lookup(x, lambda rows: self._embed_views(None, rows))
        return self._embed_views(params, x)

    def _embed_views(self, params: Mapping[str, Tensor] | None, x: Tensor) -> Tensor:
        """:meth:`_embed`, averaged over shifted (and rotated) copies in eval mode when
        ``test_shift`` (``test_rotate``) is set."""
        if not self._test_views:
            return self._embed(params, x)
        views = tta_views(x, self.test_shift, self.test_rotate)
        return torch.stack([self._embed(params, v) for v in views]).mean(0)

    def _prototypes(self, support: Tensor, sy: Tensor, queries: Tensor) -> Tensor:
        """The support prototypes, refined with the queries in eval mode when ``transductive_steps`` is set."""
        steps = 0 if self.training else self.transductive_steps
        return soft_kmeans_prototypes(support, sy, queries, steps, self.distance, self.cosine_scale)

    def _logits(self, emb: Tensor, protos: Tensor) -> Tensor:
        return prototype_logits(emb, protos, self.distance, self.cosine_scale)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> AdaptedPredictor:
        """Embed one task's support set (no task dim) and return a prototype predictor (Snell et al. 2017).

        ``predictor(x)`` embeds ``x`` with ``predictor.params`` (the model's own parameters;
        ProtoNets do not adapt weights) and returns logits against ``predictor.prototypes``
        (negative squared distances for ``"euclidean"``). Prototypes stay differentiable when
        grad mode is on. In eval mode with ``transductive_steps``, each call refines the
        prototypes with the batch ``x`` it is given (:func:`soft_kmeans_prototypes`) before
        classifying it; ``predictor.prototypes`` stays the support prototypes. With
        :attr:`whitening` set (eval mode), every embedding is multiplied by it first, and the
        prototypes are those of the whitened embeddings.
        """
        check_task_batch(support_x, support_y, batched=False)
        params = dict(self.model.named_parameters())
        support = self._whiten(self._embed_shifted(None, support_x))
        protos = prototypes(support, support_y)
        transductive = not self.training and self.transductive_steps > 0

        def logits_fn(emb: Tensor) -> Tensor:
            emb = self._whiten(emb.flatten(1))
            return self._logits(emb, self._prototypes(support, support_y, emb) if transductive else protos)

        def forward(model: nn.Module, p: Mapping[str, Tensor], b: Mapping[str, Tensor], x: Tensor) -> Tensor:
            own = len(p) == len(params) and all(p.get(k) is v for k, v in params.items())
            return self._embed_shifted(None if own else p, x)  # None: the cache may serve the module's own weights

        return AdaptedPredictor(self.model, params, None, logits_fn, protos, forward)

    def _task(self, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
        if qy.is_floating_point() or qy.is_complex():
            raise ConfigError(f"ProtoNet needs integer class labels, got query_y dtype {qy.dtype}")
        emb = self._whiten(self._embed_shifted(None, torch.cat([sx, qx])))
        protos = self._prototypes(emb[: sx.shape[0]], sy, emb[sx.shape[0]:])
        logits = self._logits(emb[sx.shape[0]:], protos)
        if int(qy.max()) >= protos.shape[0] or int(qy.min()) < 0:
            raise ConfigError(f"query_y labels must be in 0..{protos.shape[0] - 1} (the support classes), "
                              f"got {int(qy.min())}..{int(qy.max())}")
        loss = F.cross_entropy(logits, qy)
        acc = (logits.detach().argmax(-1) == qy).to(logits.dtype).mean()
        return loss, acc

    def outer_loss(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, *,
        iteration: int | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Mean over tasks of the query cross-entropy against support prototypes (Snell et al. 2017).

        Inputs have a leading task dim. Metrics: ``loss``, ``accuracy``. ``iteration`` is
        accepted for API symmetry and unused.
        """
        check_task_batch(support_x, support_y, query_x, query_y, batched=True)
        losses, accs = zip(*(self._task(support_x[b], support_y[b], query_x[b], query_y[b])
                             for b in range(support_x.shape[0])))
        loss = torch.stack(losses).mean()
        return loss, {"loss": as_float(loss), "accuracy": as_float(torch.stack(accs).mean())}

    def outer_backward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, *,
        iteration: int | None = None,
    ) -> dict[str, float]:
        """``outer_loss(...)[0].backward()`` task by task (Snell et al. 2017): same gradients,
        one task's graph alive at a time. Gradients accumulate into ``.grad``; returns the metrics."""
        check_task_batch(support_x, support_y, query_x, query_y, batched=True)
        n_tasks = support_x.shape[0]
        losses, accs = [], []
        for b in range(n_tasks):
            loss, acc = self._task(support_x[b], support_y[b], query_x[b], query_y[b])
            (loss / n_tasks).backward()
            losses.append(loss.detach())
            accs.append(acc)
        return {"loss": as_float(torch.stack(losses).mean()), "accuracy": as_float(torch.stack(accs).mean())}

    def evaluate_task(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor
    ) -> dict[str, float]:
        """Query ``loss`` and ``accuracy`` of one task (no task dim), without a graph (Snell et al. 2017).

        Runs in the module's current mode; :func:`meta.evaluation.evaluate` uses eval mode.
        """
        check_task_batch(support_x, support_y, query_x, query_y, batched=False)
        with torch.no_grad():
            loss, acc = self._task(support_x, support_y, query_x, query_y)
        return {"loss": as_float(loss), "accuracy": as_float(acc)}

    def extra_repr(self) -> str:
        extra = f", cosine_scale={self.cosine_scale}" if self.distance == "cosine" else ""
        extra += f", test_shift={self.test_shift}" if self.test_shift else ""
        extra += f", test_rotate={self.test_rotate:g}" if self.test_rotate else ""
        extra += f", transductive_steps={self.transductive_steps}" if self.transductive_steps else ""
        extra += f", whitening={tuple(self.whitening.shape)}" if self.whitening is not None else ""
        return f"distance={self.distance!r}{extra}"
