"""Born-Again Networks (Furlanello, Lipton, Tschannen, Itti and Anandkumar 2018).

Generation 0 is trained on the labels; generation ``k`` is a fresh network *with the same
architecture*, taught by generation ``k - 1`` with the distillation loss (Hinton et al. 2015).
Furlanello et al. found the students often beat their teachers, and that the ensemble of the
student generations ("BANE", the mean of their predicted probabilities) is better still.
:func:`born_again` reports the test accuracy of every generation and of the ensembles of
generations ``1..k`` for each ``k``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from mtl.data.base import LabelledImages
from mtl.distill.teachers import EnsembleTeacher
from mtl.distill.trainer import DistillConfig, StudentSpec, distill, train_from_scratch
from mtl.errors import ConfigError
from mtl.training import predict_logits
from mtl.utils.runtime import Budget

__all__ = ["BornAgainResult", "GenerationStats", "born_again", "ensemble_logits"]


def ensemble_logits(logits: list[torch.Tensor]) -> torch.Tensor:
    """``log`` of the mean of the members' softmax probabilities (the BAN ensemble of Furlanello et al. 2018)."""
    if not logits:
        raise ConfigError("an ensemble needs at least one member's logits, got none")
    stacked = torch.stack([z.float() for z in logits])
    return torch.logsumexp(torch.log_softmax(stacked, dim=2), dim=0) - torch.log(torch.tensor(float(len(logits))))


@dataclass
class GenerationStats:
    """One generation of a Born-Again Network run (Furlanello et al. 2018).

    ``accuracy``: this generation's test accuracy; ``ensemble_accuracy``: that of the mean
    probabilities of generations ``1..generation`` (``None`` for generation 0);
    ``agreement``: top-1 agreement with the previous generation (its teacher) on the test set.
    """

    generation: int
    accuracy: float | None
    ensemble_accuracy: float | None
    agreement: float | None
    train_loss: float | None
    steps: int
    seconds: float


@dataclass
class BornAgainResult:
    """Per-generation statistics and models of :func:`born_again` (Furlanello et al. 2018).

    ``ensemble_accuracy`` is the test accuracy of the ensemble of all student generations
    ``1..K`` (the paper's BAN ensemble), ``ensemble_with_teacher_accuracy`` that of ``0..K``.
    ``models[k]`` is generation ``k``; ``test_logits[k]`` its test outputs.
    """

    generations: list[GenerationStats]
    models: list[nn.Module]
    ensemble_accuracy: float | None
    ensemble_with_teacher_accuracy: float | None
    config: dict[str, Any] = field(default_factory=dict)
    test_logits: list[torch.Tensor] = field(default_factory=list)

    def ensemble(self, include_teacher: bool = False) -> EnsembleTeacher:
        """The generations (``1..K``, or ``0..K``) as one classifier averaging their probabilities."""
        members = self.models if include_teacher else self.models[1:]
        if not members:
            raise ConfigError("no student generation to ensemble (generations=0)")
        return EnsembleTeacher(members, combine="probs")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no models, no logits)."""
        return {"generations": [asdict(g) for g in self.generations], "ensemble_accuracy": self.ensemble_accuracy,
                "ensemble_with_teacher_accuracy": self.ensemble_with_teacher_accuracy, "config": self.config}


def _acc(logits: torch.Tensor | None, test: LabelledImages | None) -> float | None:
    if logits is None or test is None:
        return None
    return float((logits.argmax(1) == test.targets).float().mean())


def born_again(
    model: StudentSpec,
    train: LabelledImages,
    generations: int = 3,
    config: DistillConfig | None = None,
    *,
    teacher_config: DistillConfig | None = None,
    teacher: nn.Module | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    test: LabelledImages | None = None,
    budget: Budget | None = None,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = print,
) -> BornAgainResult:
    """Born-Again Networks (Furlanello et al. 2018): ``generations`` students, each taught by the previous one.

    Every generation has the architecture ``model`` (a registry name with ``backbone_kwargs``, or
    a factory; not a module, since each generation is a fresh network). Generation 0 is
    ``teacher`` when given (already trained), else trained from scratch with ``teacher_config``
    (default: ``config`` with ``alpha = 1``). Generation ``k >= 1`` is trained with
    :func:`~mtl.distill.trainer.distill` and ``config`` (its teacher's logits cached), initialised
    with seed ``config.seed * 1000 + k``. Furlanello et al. used the soft targets only
    (``alpha = 0``) at ``T = 1``; any ``alpha`` and ``T`` work here.

    Args:
        model: the architecture of every generation.
        train: the labelled training set.
        generations: number of student generations ``K >= 1``.
        config: training of the students.
        teacher_config: training of generation 0 (ignored when ``teacher`` is given).
        teacher: an already trained generation 0 of the same architecture.
        test: optional test set: per-generation and ensemble accuracy, agreement.
        budget: a step or time limit for each generation's training (restarted per generation).
        device: where to train.
        log: receives one line per generation (``None``: silent).

    Raises:
        ConfigError: ``generations < 1``, ``model`` given as a module, or bad options.
    """
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise ConfigError(f"generations must be an integer >= 1, got {generations!r}")
    if isinstance(model, nn.Module):
        raise ConfigError("born_again needs the architecture as a registry name or a factory (each generation "
                          "is a fresh network), not a module; pass a trained generation 0 as teacher=")
    cfg = config or DistillConfig()
    say = log or (lambda _msg: None)
    device = torch.device(device)
    kwargs = dict(backbone_kwargs or {})
    stats: list[GenerationStats] = []
    models: list[nn.Module] = []
    logits: list[torch.Tensor | None] = []

    tcfg = replace(teacher_config or cfg, alpha=1.0)
    tcfg = replace(tcfg, seed=tcfg.seed * 1000)
    start = time.perf_counter()
    if teacher is not None:
        gen0 = teacher.to(device)
        test0 = predict_logits(gen0, test.images, device=device) if test is not None else None
        stats.append(GenerationStats(0, _acc(test0, test), None, None, None, 0, time.perf_counter() - start))
    else:
        res = train_from_scratch(model, train, tcfg, backbone_kwargs=kwargs, test=test, budget=budget, device=device)
        gen0, test0 = res.model, res.test_logits
        stats.append(GenerationStats(0, res.accuracy, None, None, res.history.train_loss[-1], res.history.steps,
                                     res.seconds))
    models.append(gen0)
    logits.append(test0)
    say(_line(stats[-1]))

    for k in range(1, generations + 1):
        gcfg = replace(cfg, seed=cfg.seed * 1000 + k)
        res = distill(models[-1], model, train, gcfg, backbone_kwargs=kwargs, test=test,
                      reference=logits[-1], budget=budget, device=device)
        models.append(res.model)
        logits.append(res.test_logits)
        ens = _acc(ensemble_logits(logits[1:]), test) if test is not None else None
        stats.append(GenerationStats(k, res.accuracy, ens, res.agreement, res.history.train_loss[-1],
                                     res.history.steps, res.seconds))
        say(_line(stats[-1]))

    with_teacher = _acc(ensemble_logits(logits), test) if test is not None else None
    if test is not None:
        say(f"ensemble of generations 1-{generations}: {_pct(stats[-1].ensemble_accuracy)}; "
            f"with generation 0: {_pct(with_teacher)}")
    return BornAgainResult(
        generations=stats, models=models, ensemble_accuracy=stats[-1].ensemble_accuracy,
        ensemble_with_teacher_accuracy=with_teacher,
        config={"generations": generations, "student": asdict(cfg),
                "teacher": None if teacher is not None else asdict(tcfg)},
        test_logits=[z for z in logits if z is not None],
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _line(g: GenerationStats) -> str:
    extra = "" if g.generation == 0 else (f", ensemble 1-{g.generation} {_pct(g.ensemble_accuracy)}, "
                                          f"agreement with generation {g.generation - 1} {_pct(g.agreement)}")
    return f"generation {g.generation}: test accuracy {_pct(g.accuracy)}{extra}"
