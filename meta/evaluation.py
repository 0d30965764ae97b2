"""Few-shot evaluation: mean accuracy over test tasks with a 95% confidence interval.

The protocol of Finn et al. 2017 (MAML) and Snell et al. 2017 (Prototypical Networks): adapt
to each of many (e.g. 600) test tasks independently and report the mean query accuracy with
the half-width ``1.96 * std / sqrt(n)`` of its 95% confidence interval.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager, nullcontext
from typing import Any

from tqdm.auto import tqdm

from mtl.errors import ConfigError

__all__ = ["mean_confidence_interval", "evaluate", "confused_pairs"]

_FIELDS = ("support_x", "support_y", "query_x", "query_y")


def mean_confidence_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and confidence-interval half-width ``z * s / sqrt(n)`` of ``values``.

    As reported by Finn et al. 2017 and Snell et al. 2017: a normal approximation with ``z =
    1.96`` for ``confidence=0.95`` (exactly the value the papers use; other levels use the
    normal quantile). ``s`` is the sample standard deviation (``n - 1`` denominator; MAML's
    reference code divides by ``n``, a difference of ``sqrt(n/(n-1))``, 0.08% at n=600). With a
    single value the half-width is ``nan`` (no spread can be estimated); a non-finite value (a
    diverged task) gives a mean of ``inf`` (or ``nan``) and a ``nan`` half-width. Values may be tensors
    or numbers; an empty input or a confidence outside (0, 1) raises :class:`ConfigError`.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ConfigError("mean_confidence_interval needs at least one value, got none")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    if not all(math.isfinite(v) for v in vals):  # a diverged task: no finite mean or spread
        bad = [v for v in vals if not math.isfinite(v)]
        return (math.nan if any(math.isnan(v) for v in bad) else math.inf), math.nan
    mean = math.fsum(vals) / len(vals)
    if len(vals) == 1:
        return mean, float("nan")
    z = 1.96 if confidence == 0.95 else statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    variance = math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, z * math.sqrt(variance) / math.sqrt(len(vals))


def _tasks_in(batch: Any, index: int) -> int:
    missing = [f for f in _FIELDS if not hasattr(batch, f)]
    if missing:
        raise ConfigError(f"task_source({index}) returned {type(batch).__name__} without attributes "
                          f"{', '.join(missing)}")
    sx = batch.support_x
    if getattr(sx, "dim", lambda: 0)() < 2:
        raise ConfigError(f"task_source({index}) must return batches with a leading task dim, got "
                          f"support_x of shape {tuple(getattr(sx, 'shape', ()))}")
    return int(sx.shape[0])


def _each_task(
    task_source: Callable[[int], Any], num_tasks: int, batch_size: int | None, progress: bool, desc: str,
) -> Iterator[tuple[Any, int]]:
    """``(batch, b)`` for the first ``num_tasks`` tasks of ``task_source`` (through :func:`_evaluation_tasks`)."""
    done, index = 0, 0
    bar = tqdm(total=num_tasks, desc=desc, disable=not progress, unit="task", leave=False)
    try:
        while done < num_tasks:
            batch = task_source(index)
            n = _tasks_in(batch, index)
            if n == 0:
                raise ConfigError(f"task_source({index}) returned a batch of 0 tasks")
            if batch_size is not None and n != batch_size:
                raise ConfigError(
                    f"task_source({index}) returned {n} tasks, expected batch_size={batch_size}"
                )
            for b in range(min(n, num_tasks - done)):
                yield batch, b
                done += 1
                bar.update(1)
            index += 1
    finally:
        bar.close()


@contextmanager
def _evaluation_tasks(
    algo: Any, task_source: Callable[[int], Any], num_tasks: int, batch_size: int | None, progress: bool, desc: str,
) -> Iterator[Iterator[tuple[Any, int]]]:
    """The tasks of :func:`_each_task`, with the algorithm in eval mode for the whole block (its
    mode restored after, also on errors) and inside its ``embedding_cache()`` when it has one."""
    was_training = bool(getattr(algo, "training", False))
    if hasattr(algo, "train"):
        algo.train(False)
    cache = getattr(algo, "embedding_cache", None)
    try:
        with (cache() if callable(cache) else nullcontext()), \
                closing(_each_task(task_source, num_tasks, batch_size, progress, desc)) as tasks:
            yield tasks
    finally:
        if hasattr(algo, "train"):
            algo.train(was_training)


def _task_metrics(algo: Any, tasks: Iterator[tuple[Any, int]], options: dict[str, Any],
                  workers: int) -> Iterator[dict[str, float]]:
    """``algo.evaluate_task`` of each task, in order; with ``workers > 1``, that many at a time on threads."""
    def one(batch: Any, b: int) -> dict[str, float]:
        return algo.evaluate_task(batch.support_x[b], batch.support_y[b], batch.query_x[b], batch.query_y[b],
                                  **options)

    if workers == 1:
        for batch, b in tasks:
            yield one(batch, b)
        return
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from mtl.utils.precision import autocast_state, restore_autocast

    caller_threads = torch.get_num_threads()
    intra = max(1, caller_threads // workers)
    grad_on = torch.is_grad_enabled()
    device = next((p.device.type for p in algo.parameters()), "cpu") if hasattr(algo, "parameters") else "cpu"
    mixed = autocast_state(device)  # grad mode and autocast are per thread: the workers take the caller's

    def work(batch: Any, b: int) -> dict[str, float]:
        torch.set_num_threads(intra)  # OpenMP's thread count is per calling thread
        with torch.set_grad_enabled(grad_on), restore_autocast(device, mixed):
            return one(batch, b)

    # as in MAML's task workers: the leaves' gradient accumulators are created here, before the
    # threads start, so that no worker creates one while another waits on the same leaf's lock
    with torch.enable_grad():
        accumulators = [p.view_as(p) for p in getattr(algo, "parameters", list)() if p.requires_grad]
    pending: list[Any] = []
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evaluate") as pool:
            for batch, b in tasks:
                pending.append(pool.submit(work, batch, b))
                if len(pending) >= 2 * workers:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
    finally:
        torch.set_num_threads(caller_threads)
        del accumulators


def evaluate(
    algo: Any,
    task_source: Callable[[int], Any],
    num_tasks: int = 600,
    batch_size: int | None = None,
    progress: bool = True,
    desc: str = "evaluate",
    at_steps: Sequence[int] | None = None,
    workers: int = 1,
) -> dict[str, float]:
    """Evaluate a meta-learner on ``num_tasks`` test tasks (Finn et al. 2017; Snell et al. 2017).

    Args:
        algo: any algorithm of :mod:`meta` (it needs ``evaluate_task(sx, sy, qx, qy) -> dict``).
        task_source: ``index -> batch`` for ``index = 0, 1, ...``; a batch has attributes
            ``support_x``, ``support_y``, ``query_x``, ``query_y`` with a leading task dim. Tasks
            are taken in order until ``num_tasks`` are done (extra tasks of the last batch are
            ignored), so a deterministic source gives a reproducible evaluation.
        num_tasks: number of tasks to evaluate (>= 1; 600 as in the papers).
        batch_size: tasks each batch of the source must hold (a batch of another size raises
            :class:`ConfigError`, catching a source built for another size); ``None`` accepts
            any size. ``ceil(num_tasks / batch_size)`` batches are then requested.
        progress: show a tqdm progress bar.
        desc: progress-bar label.
        at_steps: algorithms with an inner loop (MAML family, Reptile): also report the metrics
            after these numbers of inner steps (each at most the algorithm's
            ``eval_inner_steps``), from the same adaptation of each task: ``accuracy@5`` with
            ``ci95@5`` etc. The way to choose the number of test steps on validation tasks.
        workers: adapt this many tasks at a time, each on a thread of its own with an equal share
            of torch's intra-op threads (on a 2-core CPU, 2 workers evaluated a 20-way MAML
            twice as fast as one thread and 1.3 times as fast as two intra-op threads). The
            results are those of one worker: tasks are independent and reported in order.
            Algorithms with an embedding cache (ProtoNets, whose tests take seconds) run on one
            thread whatever this says.

    Returns:
        ``accuracy`` (fraction in [0, 1]) for classifiers, else ``mse`` (when reported by the
        algorithm) or ``loss``, with ``ci95`` its 95% half-width over tasks; also the mean of every
        other per-task metric (e.g. ``loss``), ``num_tasks`` and ``tasks_per_second``.

    The algorithm is put in eval mode for the run (for ProtoNets this selects BatchNorm running
    statistics; MAML-family models always use batch statistics) and its mode restored after.
    An algorithm with an ``embedding_cache()`` context (:class:`~meta.protonet.ProtoNet`) runs
    inside it: each distinct image is then embedded once for the whole run.
    """
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ConfigError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ConfigError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
    if not callable(task_source):
        raise ConfigError(f"task_source must be a callable index -> batch, got {type(task_source).__name__}")
    if not callable(getattr(algo, "evaluate_task", None)):
        raise ConfigError(f"algo must have an evaluate_task method, got {type(algo).__name__}")
    if at_steps is not None and not hasattr(algo, "eval_inner_steps"):
        raise ConfigError(f"at_steps needs an algorithm with inner steps (MAML family, Reptile), "
                          f"got {type(algo).__name__}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    if callable(getattr(algo, "embedding_cache", None)):
        workers = 1  # the cache is not shared between threads; such tests take seconds anyway
    options = {} if at_steps is None else {"at_steps": at_steps}

    per_task: dict[str, list[float]] = {}
    done = 0
    start = time.perf_counter()
    with _evaluation_tasks(algo, task_source, num_tasks, batch_size, progress, desc) as tasks:
        for metrics in _task_metrics(algo, tasks, options, workers):
            for key, value in metrics.items():
                per_task.setdefault(key, []).append(float(value))
            done += 1
    elapsed = time.perf_counter() - start
    primary = next(k for k in ("accuracy", "mse", "loss") if k in per_task)
    result: dict[str, float] = {}
    for key, values in per_task.items():
        result[key] = math.fsum(values) / len(values)
    mean, half = mean_confidence_interval(per_task[primary])
    result[primary] = mean
    result["ci95"] = half
    for key in per_task:
        if key.startswith(primary + "@"):
            result[key], result["ci95" + key[len(primary):]] = mean_confidence_interval(per_task[key])
    result["num_tasks"] = done
    result["tasks_per_second"] = done / elapsed if elapsed > 0 else float("inf")
    return result


def confused_pairs(
    algo: Any,
    task_source: Callable[[int], Any],
    num_tasks: int = 600,
    class_names: Sequence[str] | None = None,
    top: int = 10,
    progress: bool = True,
) -> dict[str, Any]:
    """Which classes a few-shot learner mistakes for which, over the tasks :func:`evaluate` uses.

    Every task is adapted with ``algo.adapt(support_x, support_y)`` (with gradients recorded
    unless ``algo.adapt_needs_grad`` is false, as for ProtoNets, whose embedding cache then
    serves every image after its first task) and each query predicted as
    the arg-max of the adapted predictor; a wrong prediction counts one error for the unordered
    pair {true class, predicted class}, named by the original class ids of the batch's ``classes``
    (looked up in ``class_names`` when given). Useful to tell errors a better model could avoid
    from classes that look alike in the data (e.g. the same glyph in two alphabets).

    Returns ``accuracy`` (fraction of queries; equals :func:`evaluate`'s when every task has the
    same number of queries), ``errors``, ``queries``, ``num_tasks`` and ``pairs``: the ``top``
    pairs with the most errors, each ``{"a", "b", "errors", "share"}`` (``share`` of all errors).
    """
    import torch

    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ConfigError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ConfigError(f"top must be an integer >= 0, got {top!r}")
    if not callable(getattr(algo, "adapt", None)):
        raise ConfigError(f"algo must have an adapt method, got {type(algo).__name__}")
    pairs: Counter[tuple[int, int]] = Counter()
    errors = queries = done = 0
    needs_grad = bool(getattr(algo, "adapt_needs_grad", True))
    with _evaluation_tasks(algo, task_source, num_tasks, None, progress, "confusions") as tasks:
        for batch, b in tasks:
            if not hasattr(batch, "classes"):
                raise ConfigError("task_source returned batches without 'classes' (the class ids)")
            with torch.set_grad_enabled(needs_grad):
                predictor = algo.adapt(batch.support_x[b], batch.support_y[b])
            with torch.no_grad():
                pred = predictor(batch.query_x[b]).argmax(-1)
            truth = batch.query_y[b]
            ids = batch.classes[b].tolist()
            wrong = torch.nonzero(pred != truth).flatten().tolist()
            for j in wrong:
                a, c = ids[int(truth[j])], ids[int(pred[j])]
                pairs[(min(a, c), max(a, c))] += 1
            errors += len(wrong)
            queries += int(truth.numel())
            done += 1

    def name(i: int) -> str:
        return str(class_names[i]) if class_names is not None and 0 <= i < len(class_names) else str(i)

    rows = [{"a": name(a), "b": name(c), "errors": k, "share": k / errors}
            for (a, c), k in pairs.most_common(top)]
    return {"accuracy": 1 - errors / queries, "errors": errors, "queries": queries, "num_tasks": done,
            "pairs": rows}
