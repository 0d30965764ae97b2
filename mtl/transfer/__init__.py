"""Transfer learning and fine-tuning over the backbone registry.

- :mod:`~mtl.transfer.freezing` — freeze / unfreeze by regular expression, freeze below a layer,
  stop-gradients, discriminative learning rates and gradual unfreezing (ULMFiT);
- :mod:`~mtl.transfer.checkpoints` — named checkpoints with metadata and :func:`load_partial`;
- :mod:`~mtl.transfer.features` — bottleneck feature caching and training on the cache;
- :mod:`~mtl.transfer.regimes` — strategies, the SGD + StepLR recipe, the four-regime advisor;
- :mod:`~mtl.transfer.pretraining` — greedy layer-wise pre-training (auto-encoders, RBMs).
"""

from mtl.transfer.checkpoints import (
    NamedCheckpoint,
    PartialLoad,
    build_from_checkpoint,
    load_partial,
    model_metadata,
    read_named_checkpoint,
    save_named_checkpoint,
)
from mtl.transfer.features import FeatureCache, fingerprint_module, fingerprint_tensor, split_at, train_on_features
from mtl.transfer.freezing import (
    GradualUnfreezing,
    discriminative_param_groups,
    freeze,
    freeze_below,
    frozen_names,
    layer_groups,
    match_names,
    stop_gradient_after,
    trainable_names,
    unfreeze,
)
from mtl.transfer.pretraining import LayerReport, PretrainConfig, greedy_pretrain, layer_units
from mtl.transfer.regimes import (
    DISTANCE_MEASURES,
    RULES,
    STRATEGIES,
    Advice,
    AdviceRule,
    CalibrationCell,
    FineTuneRecipe,
    FineTuneResult,
    Strategy,
    advise,
    apply_strategy,
    calibrate_rule,
    distance_extractor,
    fine_tune,
    get_rule,
    measure_distance,
    replace_head,
    score_rule,
    trunk_layers,
)

__all__ = [
    "score_rule",
    "get_rule",
    "distance_extractor",
    "calibrate_rule",
    "CalibrationCell",
    "AdviceRule",
    "RULES",
    "DISTANCE_MEASURES",
    "STRATEGIES",
    "Advice",
    "FeatureCache",
    "FineTuneRecipe",
    "FineTuneResult",
    "GradualUnfreezing",
    "LayerReport",
    "NamedCheckpoint",
    "PartialLoad",
    "PretrainConfig",
    "Strategy",
    "advise",
    "apply_strategy",
    "build_from_checkpoint",
    "discriminative_param_groups",
    "fine_tune",
    "fingerprint_module",
    "fingerprint_tensor",
    "freeze",
    "freeze_below",
    "frozen_names",
    "greedy_pretrain",
    "layer_groups",
    "layer_units",
    "load_partial",
    "match_names",
    "measure_distance",
    "model_metadata",
    "read_named_checkpoint",
    "replace_head",
    "save_named_checkpoint",
    "split_at",
    "stop_gradient_after",
    "train_on_features",
    "trainable_names",
    "trunk_layers",
    "unfreeze",
]
