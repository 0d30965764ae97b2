"""Source / target sets for transfer: disjoint classes, shots per class, held-out test drawings."""

from __future__ import annotations

import pytest
import torch

from mtl.errors import ConfigError
from mtl.transfer.problems import make_transfer_problem


def test_glyph_problem_shapes_and_inverted_source():
    near = make_transfer_problem("glyphs", shots=3, source_classes=6, target_classes=4, seed=1)
    far = make_transfer_problem("glyphs", source="inverted", shots=3, source_classes=6, target_classes=4, seed=1)
    assert near.target_train.num_classes == 4 and len(near.target_train) == 12 and len(near.target_test) == 40
    assert torch.bincount(near.target_train.targets).tolist() == [3, 3, 3, 3]
    assert torch.allclose(far.source.images, 1.0 - near.source.images)
    assert len(near.target_pool) == 40
    with pytest.raises(ConfigError, match="shots"):
        make_transfer_problem("glyphs", shots=11, source_classes=4, target_classes=2)
    with pytest.raises(ConfigError, match="source 'glyphs'"):
        make_transfer_problem("glyphs", source="glyphs")


def test_omniglot_problem_is_alphabet_disjoint_with_drawer_split(omniglot_original):
    problem = make_transfer_problem("omniglot", shots=2, root=omniglot_original, seed=0)
    src_names = set(problem.source.class_names)
    tgt_names = set(problem.target_train.class_names)
    assert len(src_names) == 175 and len(tgt_names) == 50 and not src_names & tgt_names
    assert {n.split("/")[0] for n in tgt_names} == {"Greek", "Latin"}
    assert len(problem.target_train) == 100 and len(problem.target_test) == 500
    test_imgs = problem.target_test.images.reshape(500, -1)
    train_imgs = problem.target_train.images.reshape(100, -1)
    assert torch.cdist(train_imgs, test_imgs).min() > 0  # no training drawing is a test drawing
