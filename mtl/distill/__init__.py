"""Knowledge distillation (Hinton, Vinyals and Dean 2015) and Born-Again Networks (Furlanello et al. 2018).

- :func:`kd_loss` — ``alpha * CE + (1 - alpha) * T^2 * KL`` at temperature ``T``;
- :class:`EnsembleTeacher`, :class:`CachedLogits` — an ensemble as one teacher, and a frozen
  teacher's logits cached by sample position;
- :func:`distill`, :func:`train_from_scratch` — teacher -> student training over registry backbones;
- :func:`born_again` — generations of same-architecture students and their ensemble.
"""

from mtl.distill.born_again import BornAgainResult, GenerationStats, born_again, ensemble_logits
from mtl.distill.losses import check_alpha, check_temperature, kd_loss, soft_target_loss
from mtl.distill.teachers import COMBINE_MODES, CachedLogits, EnsembleTeacher, agreement, count_classes, is_frozen
from mtl.distill.trainer import (
    DistillConfig,
    DistillResult,
    build_model,
    distill,
    random_shift,
    train_from_scratch,
)

__all__ = [
    "COMBINE_MODES",
    "BornAgainResult",
    "CachedLogits",
    "DistillConfig",
    "DistillResult",
    "EnsembleTeacher",
    "GenerationStats",
    "agreement",
    "born_again",
    "build_model",
    "check_alpha",
    "check_temperature",
    "count_classes",
    "distill",
    "ensemble_logits",
    "is_frozen",
    "kd_loss",
    "random_shift",
    "soft_target_loss",
    "train_from_scratch",
]
