"""Task affinity: which tasks help each other, and how to group them.

- :mod:`mtl.affinity.transfer_matrix`: the transfer matrix of Taskonomy (Zamir et al. 2018):
  a frozen encoder per source task, a head per target trained on limited data, normalised per
  target against training from scratch.
- :mod:`mtl.affinity.tag`: inter-task affinity by lookahead during joint training (Fifty et al.
  2021, TAG).
- :mod:`mtl.affinity.grouping`: the split into ``k`` groups with the highest total affinity;
  :mod:`mtl.affinity.group_training` trains and tests such a split.
- :mod:`mtl.affinity.synthetic`, :mod:`mtl.affinity.problems`: tasks with known relations.
- :mod:`mtl.affinity.plots`: heatmaps.

Example::

    from mtl.affinity import correlated_regression, tag_affinity, best_grouping
    from mtl.multitask import MultiTaskConfig

    problem = correlated_regression()          # t1~t2 (0.9), t3~t4 (0.7), others 0
    aff, _ = tag_affinity(problem, "mlp", {"in_features": 100, "hidden": [16]},
                          MultiTaskConfig(epochs=3), head_hidden=8)
    print(aff.ranked_pairs()[:2], best_grouping(aff.matrix, aff.task_names, 2))
"""

from mtl.affinity.group_training import restrict, train_groups
from mtl.affinity.grouping import MAX_TASKS, Grouping, best_grouping, group_score, partitions, rank_groupings
from mtl.affinity.plots import plot_affinity
from mtl.affinity.problems import (
    AFFINITY_DATASETS,
    default_backbone,
    glyph_sides,
    load_affinity_problem,
    omniglot_sides,
    sides_tasks,
)
from mtl.affinity.synthetic import PAIRS_CORRELATIONS, correlated_regression, pairs_correlations
from mtl.affinity.tag import AffinityTrainer, TaskAffinity, lookahead_affinity, tag_affinity
from mtl.affinity.transfer_matrix import TransferConfig, TransferMatrix, freeze, normalised_gain, transfer_matrix

__all__ = [
    "AFFINITY_DATASETS",
    "AffinityTrainer",
    "Grouping",
    "MAX_TASKS",
    "PAIRS_CORRELATIONS",
    "TaskAffinity",
    "TransferConfig",
    "TransferMatrix",
    "best_grouping",
    "correlated_regression",
    "default_backbone",
    "freeze",
    "glyph_sides",
    "group_score",
    "load_affinity_problem",
    "lookahead_affinity",
    "normalised_gain",
    "omniglot_sides",
    "pairs_correlations",
    "partitions",
    "plot_affinity",
    "rank_groupings",
    "restrict",
    "sides_tasks",
    "tag_affinity",
    "train_groups",
    "transfer_matrix",
]
