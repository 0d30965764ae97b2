"""Classifier pre-training of a few-shot embedding.

Train the backbone with a linear head as an ordinary classifier over all training classes
(cross-entropy on mini-batches), then drop the head: the trunk is a few-shot learner by
nearest-prototype classification (Chen et al. 2019, "A Closer Look at Few-shot Classification";
Tian et al. 2020, "Rethinking Few-Shot Image Classification: a Good Embedding Is All You Need"),
and a starting point for episodic training (``fewshot train --init``; Chen et al. 2021,
"Meta-Baseline: Exploring Simple Meta-Learning for Few-Shot Learning").

Batches, augmentation draws and validation tasks depend only on the seed and the step, so an
iteration budget gives the same weights on every run. The learning rate follows a cosine from
``lr`` to 0 over the budget (its iterations, or else its seconds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from meta.evaluation import evaluate
from meta.fewshot import FewShotConfig, TaskSources, build_algorithm
from mtl.data.augment import random_affine, random_shift
from mtl.data.episodes import _derived_seed
from mtl.errors import ConfigError
from mtl.utils import (
    Budget,
    CSVLogger,
    atomic_write_json,
    check_new_output,
    plot_curves,
    prepare_out_dir,
    resolve_device,
    seed_everything,
)
from mtl.utils.precision import autocast

__all__ = ["pretrain_classifier"]

_BATCH_STREAM = 11


def _cosine_lr(lr: float, budget: Budget, step: int) -> float:
    if budget.iterations is not None:
        frac = step / budget.iterations
    else:
        assert budget.seconds is not None
        frac = budget.elapsed() / budget.seconds
    return lr * 0.5 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))


def pretrain_classifier(
    cfg: FewShotConfig,
    budget: Budget,
    out_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    *,
    batch_size: int = 128,
    lr: float = 1e-3,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``cfg.backbone`` as a classifier of every training class; keep the best trunk.

    ``cfg`` gives the data, split, backbone, augmentation (``augment_*``), seed, precision and validation
    (``validate_every`` steps, ``validation_tasks`` nearest-prototype tasks at ``val_ways``/``shots``
    on the validation classes); the trunk with the best validation accuracy is written to
    ``out_dir/backbone.pt`` (a named checkpoint, loadable by ``fewshot train --init`` and
    :func:`mtl.transfer.load_partial`) and tested as a ProtoNet on ``test_tasks`` held-out tasks.
    Also written: ``metrics.csv`` and ``learning_curve.png``. Returns the result record
    (``accuracy``, ``ci95``, ``steps``, ``best_step``, ``train_seconds``, ...).
    """
    from mtl.transfer.checkpoints import save_named_checkpoint

    cfg = cfg.resolved()
    if cfg.is_regression:
        raise ConfigError("classifier pre-training needs an image dataset; 'sinusoid' is a regression task")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a finite number > 0, got {lr!r}")
    check_new_output(json_path, overwrite, what="--json")
    out = prepare_out_dir(out_dir, overwrite=overwrite) if out_dir is not None else None
    if out is not None and overwrite:
        for name in ("backbone.pt", "metrics.csv", "learning_curve.png", "result.json"):
            (out / name).unlink(missing_ok=True)  # only this command's own files
    seed_everything(cfg.seed)
    dev = resolve_device(device)
    tasks = TaskSources(cfg, dev)
    proto = build_algorithm(replace(cfg, algo="protonet"), tasks.image_shape).to(dev)
    trunk = proto.model
    data = tasks.data
    train_ids = torch.tensor(tasks.splits["train"])
    mask = torch.isin(data.targets, train_ids)
    images = data.images[mask]
    relabel = torch.full((int(data.targets.max()) + 1,), -1, dtype=torch.long)
    relabel[train_ids] = torch.arange(len(train_ids))
    labels = relabel[data.targets[mask]]
    with torch.no_grad():
        trunk.eval()
        dim = trunk(images[:2].to(dev)).flatten(1).shape[1]
        trunk.train()
    head = nn.Linear(dim, len(train_ids)).to(dev)
    opt = torch.optim.Adam([*trunk.parameters(), *head.parameters()], lr=lr)
    csv = CSVLogger(out / "metrics.csv", step_key="step") if out is not None else None
    bf16_note = "; forward passes in bfloat16 autocast" if cfg.precision == "bf16" else ""
    log(f"classifier pre-training of {cfg.backbone} ({dim}-d embedding) on {len(train_ids)} training classes, "
        f"{len(images)} images; {tasks.note}{bf16_note}")

    def validate() -> float:
        res = evaluate(proto, tasks.val, num_tasks=cfg.validation_tasks, progress=False)
        return float(res["accuracy"])

    best_acc, best_step, best_state = -1.0, 0, None
    step, seconds, window = 0, 0.0, []
    budget.restart()
    bar = tqdm(total=budget.iterations, disable=not progress, desc="pretrain", unit="step", leave=False)
    try:
        while not budget.exhausted(step):
            for group in opt.param_groups:
                group["lr"] = _cosine_lr(lr, budget, step)
            start = time.perf_counter()
            gen = torch.Generator().manual_seed(_derived_seed(cfg.seed, step, _BATCH_STREAM) % 2**63)
            idx = torch.randint(0, len(images), (batch_size,), generator=gen)
            x = random_affine(images[idx], gen, degrees=cfg.augment_rotate, scale=cfg.augment_scale,
                              shear=cfg.augment_shear)
            x = random_shift(x, cfg.augment_shift, gen).to(dev)
            with autocast(dev, cfg.precision):
                logits = head(trunk(x).flatten(1))
            loss = F.cross_entropy(logits.float(), labels[idx].to(dev))
            if not torch.isfinite(loss):
                raise ConfigError(f"the classifier loss became {float(loss)} at step {step + 1}; lower lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seconds += time.perf_counter() - start
            window.append(float(loss.detach()))
            bar.update(1)
            last = budget.exhausted(step)
            if step % cfg.validate_every == 0 or last:
                acc = validate()
                row = {"step": step, "seconds": round(seconds, 2), "train_loss": sum(window) / len(window),
                       "lr": opt.param_groups[0]["lr"], "val_accuracy": acc}
                window = []
                if csv is not None:
                    csv.log(row)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{100 * acc:.1f}%")
                if acc > best_acc:
                    best_acc, best_step = acc, step
                    best_state = {k: v.detach().clone() for k, v in trunk.state_dict().items()}
                    if out is not None:
                        save_named_checkpoint(out / "backbone.pt", trunk, overwrite=True,
                                              extra={"pretrain": {"step": step, "val_accuracy": acc}})
    finally:
        bar.close()
    if best_state is not None:
        trunk.load_state_dict(best_state)
    if out is not None and csv is not None and csv.rows:
        plot_curves(out / "learning_curve.png", csv.column("step"),
                    {"train_loss": csv.column("train_loss"), "val_accuracy": csv.column("val_accuracy")},
                    title="classifier pre-training", xlabel="step")
    start = time.perf_counter()
    result = evaluate(proto, tasks.test, num_tasks=cfg.test_tasks, progress=progress, desc="test tasks")
    record = {
        "algorithm": "pretrain", "dataset": cfg.dataset, "backbone": cfg.backbone, "ways": cfg.ways,
        "shots": cfg.shots, "queries": cfg.queries, "steps": step, "best_step": best_step,
        "batch_size": batch_size, "lr": lr, "train_seconds": round(seconds, 2),
        "val_accuracy": best_acc, "test_tasks": int(result["num_tasks"]), "accuracy": result["accuracy"],
        "ci95": result["ci95"], "eval_seconds": round(time.perf_counter() - start, 2), "split": tasks.note,
        "seed": cfg.seed, "checkpoint": str(out / "backbone.pt") if out is not None else None,
    }
    if cfg.precision != "fp32":
        record["precision"] = cfg.precision
    if json_path is not None:
        atomic_write_json(json_path, record)
    if out is not None:
        atomic_write_json(out / "result.json", record)
    return record
