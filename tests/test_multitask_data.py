"""Multi-task problems: MMoE synthetic regression, glyph and Omniglot task pairs, two-object overlays."""

import numpy as np
import pytest
import torch

from mtl.data import LabelledImages
from mtl.errors import ConfigError
from mtl.multitask import glyph_multitask, load_problem, mmoe_synthetic, multi_glyphs, overlay_pairs


def test_synthetic_correlation_controls_the_tasks():
    same = mmoe_synthetic(1.0, num_train=2000, num_val=10, num_test=10, seed=3)
    diff = same.train.targets["y1"] - same.train.targets["y2"]
    assert float(diff.std()) == pytest.approx(0.1 * np.sqrt(2), rel=0.1)  # only the label noise differs
    assert same.info["label_pearson"] > 0.98
    unrelated = mmoe_synthetic(0.0, num_train=2000, num_val=10, num_test=10, seed=3)
    assert abs(unrelated.info["label_pearson"]) < 0.1
    mid = mmoe_synthetic(0.5, num_train=2000, num_val=10, num_test=10, seed=3)
    assert 0.1 < mid.info["label_pearson"] < 0.9
    assert same.train.input_shape == (100,) and [t.name for t in same.tasks] == ["y1", "y2"]
    assert len(same.train) == 2000 and len(same.val) == 10 and len(same.test) == 10


def test_synthetic_is_deterministic_by_seed_and_checks_p():
    a, b = mmoe_synthetic(0.5, 50, 5, 5, seed=1), mmoe_synthetic(0.5, 50, 5, 5, seed=1)
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(a.test.targets["y2"], b.test.targets["y2"])
    assert not torch.equal(a.train.inputs, mmoe_synthetic(0.5, 50, 5, 5, seed=2).train.inputs)
    with pytest.raises(ConfigError, match=r"correlation must be a number in \[-1, 1\], got 1.5"):
        mmoe_synthetic(1.5)


def test_overlay_pairs_place_two_characters_with_their_labels():
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(6, 1, 10, 10, generator=g) > 0.7).float()
    source = LabelledImages(images, torch.tensor([0, 1, 2, 3, 4, 5]))
    flat = overlay_pairs(source, 20, seed=1, max_shift=0)
    left, right = flat.targets["left"], flat.targets["right"]
    assert torch.equal(flat.inputs, torch.maximum(images[left], images[right]))  # no shift: exact overlap
    shifted = overlay_pairs(source, 20, seed=1, max_shift=3, out_size=12)
    assert shifted.inputs.shape == (20, 1, 12, 12)
    assert 0.0 <= float(shifted.inputs.min()) and float(shifted.inputs.max()) <= 1.0


def test_glyph_problems_split_by_redraw():
    prob = glyph_multitask(num_classes=6, samples_per_class=8, val_per_class=1, test_per_class=2)
    assert [t.name for t in prob.tasks] == ["glyph", "strokes"]
    assert len(prob.train) == 30 and len(prob.val) == 6 and len(prob.test) == 12
    assert prob.tasks[1].num_outputs == 4 and int(prob.train.targets["strokes"].max()) < 4
    multi = multi_glyphs(num_classes=4, sizes=(40, 10, 10), samples_per_class=8)
    assert multi.train.input_shape == (1, 28, 28) and {t.num_outputs for t in multi.tasks} == {4}


def test_problem_names_and_root_are_checked():
    with pytest.raises(ConfigError, match="unknown multi-task dataset 'cifar'"):
        load_problem("cifar")
    with pytest.raises(ConfigError, match="needs --root"):
        load_problem("omniglot")


def test_omniglot_character_and_alphabet_with_held_out_drawers(omniglot_original):
    prob = load_problem("omniglot", root=omniglot_original)
    assert {t.name: t.num_outputs for t in prob.tasks} == {"character": 242, "alphabet": 8}
    assert (len(prob.train), len(prob.val), len(prob.test)) == (242 * 14, 242 * 2, 242 * 4)
    # every character is in the test set, drawn by other people
    assert torch.unique(prob.test.targets["character"]).numel() == 242
    assert prob.info["test_drawers"] == [17, 18, 19, 20]
    multi = load_problem("multi-omniglot", root=omniglot_original, sizes=(50, 10, 20))
    assert {t.num_outputs for t in multi.tasks} == {10} and len(multi.test) == 20
