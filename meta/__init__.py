"""meta: meta-learning, few-shot learning and self-training, built on :mod:`mtl`.

Algorithms are small functional objects (torch.func; no module copies) with ``adapt`` for one
task and ``outer_loss`` for the meta-update:

- :class:`MAML` (Finn et al. 2017), :class:`FOMAML`, :class:`MetaSGD` (Li et al. 2017),
  :class:`ANIL` (Raghu et al. 2020), :class:`MAMLPlusPlus` (Antoniou et al. 2019),
  :class:`ProtoMAML` (Triantafillou et al. 2020);
- :class:`Reptile` (Nichol et al. 2018); :class:`ProtoNet` (Snell et al. 2017), with
  :class:`EmbeddingEnsemble` to use several embedding networks as one;
- :func:`self_train` and :func:`pseudo_label_online` (self-training with pseudo-labels);
- :class:`MetaTrainer` for the outer loop and :func:`evaluate` for the papers' protocol
  (600 held-out tasks, mean accuracy with a 95% confidence interval), :func:`confused_pairs`
  for the classes a learner mistakes for each other;
- :mod:`meta.pretrain` for classifier pre-training of a few-shot embedding.
"""

from meta.evaluation import confused_pairs, evaluate, mean_confidence_interval
from meta.maml import ANIL, FOMAML, MAML, MAMLPlusPlus, MetaSGD, ProtoMAML
from meta.protonet import EmbeddingEnsemble, ProtoNet
from meta.reptile import Reptile
from meta.selftrain import OnlineConfig, SelfTrainConfig, pseudo_label_online, select_pseudo_labels, self_train
from meta.trainer import MetaTrainer, MetaTrainerConfig

__all__ = [
    "ANIL",
    "EmbeddingEnsemble",
    "FOMAML",
    "MAML",
    "MAMLPlusPlus",
    "MetaSGD",
    "MetaTrainer",
    "MetaTrainerConfig",
    "ProtoMAML",
    "ProtoNet",
    "Reptile",
    "OnlineConfig",
    "SelfTrainConfig",
    "confused_pairs",
    "evaluate",
    "mean_confidence_interval",
    "pseudo_label_online",
    "select_pseudo_labels",
    "self_train",
]
