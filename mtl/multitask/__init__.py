"""Multi-task learning: hard and soft parameter sharing, cross-stitch, MMoE, loss weighting, a trainer.

Architectures (:mod:`mtl.multitask.architectures`) and loss weightings
(:mod:`mtl.multitask.weighting`) are independent and combine freely; tasks are declared as
:class:`TaskSpec` (name -> head size, loss, metric) and may have missing labels.

Example::

    from mtl.multitask import build_model, mmoe_synthetic, MultiTaskTrainer, MultiTaskConfig

    problem = mmoe_synthetic(correlation=0.5)
    model = build_model("mmoe", problem.tasks, "mlp", {"in_features": 100, "hidden": (16,)},
                        head_hidden=8, num_experts=4)
    trainer = MultiTaskTrainer(model, problem.tasks, problem.train, problem.val, weighting="uncertainty",
                               config=MultiTaskConfig(epochs=5))
    trainer.fit()
    print(trainer.evaluate(problem.test))
"""

from mtl.multitask.architectures import (
    ARCHITECTURES,
    CrossStitch,
    HardSharing,
    MMoE,
    MultiTaskModel,
    SingleTask,
    SoftSharing,
    build_model,
)
from mtl.multitask.data import (
    DATASETS,
    MultiTaskProblem,
    glyph_multitask,
    load_problem,
    mmoe_synthetic,
    multi_glyphs,
    multi_omniglot,
    omniglot_multitask,
    overlay_pairs,
)
from mtl.multitask.tasks import MultiTaskData, TaskSpec, delta_m, masked_task_loss, task_metric
from mtl.multitask.trainer import MultiTaskConfig, MultiTaskTrainer, evaluate_multitask
from mtl.multitask.weighting import (
    DWA,
    MGDA,
    WEIGHTINGS,
    CAGrad,
    EqualWeighting,
    FixedWeighting,
    GradNorm,
    PCGrad,
    UncertaintyWeighting,
    Weighting,
    make_weighting,
)

__all__ = [
    "ARCHITECTURES",
    "CAGrad",
    "CrossStitch",
    "DATASETS",
    "DWA",
    "EqualWeighting",
    "FixedWeighting",
    "GradNorm",
    "HardSharing",
    "MGDA",
    "MMoE",
    "MultiTaskConfig",
    "MultiTaskData",
    "MultiTaskModel",
    "MultiTaskProblem",
    "MultiTaskTrainer",
    "PCGrad",
    "SingleTask",
    "SoftSharing",
    "TaskSpec",
    "UncertaintyWeighting",
    "WEIGHTINGS",
    "Weighting",
    "build_model",
    "delta_m",
    "evaluate_multitask",
    "glyph_multitask",
    "load_problem",
    "make_weighting",
    "masked_task_loss",
    "mmoe_synthetic",
    "multi_glyphs",
    "multi_omniglot",
    "omniglot_multitask",
    "overlay_pairs",
    "task_metric",
]
