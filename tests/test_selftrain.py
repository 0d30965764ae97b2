"""Self-training (meta.selftrain): selection, the round loop, the online variant, the EMA teacher, bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from meta.selftrain import (
    EMATeacher,
    OnlineConfig,
    SelfTrainConfig,
    lee_alpha,
    make_pool,
    pseudo_label_online,
    random_shift,
    select_pseudo_labels,
    self_train,
    split_labelled_unlabelled,
)
from mtl.backbones import create_backbone
from mtl.data import LabelledImages, UnlabelledImages
from mtl.errors import ConfigError, DatasetError
from mtl.training import train_classifier

MLP = {"in_features": 16, "hidden": (16,)}


def blobs(n_per_class=60, classes=4, seed=0, centres_seed=0):
    """Overlapping Gaussian blobs in [0, 1]^16 as 1x4x4 images: one labelled drawing per class is not enough."""
    centres = torch.rand(classes, 1, 4, 4, generator=torch.Generator().manual_seed(centres_seed))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = (centres[y] + 0.25 * torch.randn(len(y), 1, 4, 4, generator=g)).clamp(0, 1)
    return LabelledImages(x, y)


@pytest.fixture(scope="module")
def toy():
    labelled, pool = split_labelled_unlabelled(blobs(seed=0), 1, seed=0)
    return labelled, pool, blobs(n_per_class=100, seed=1)


def quiet(_msg):
    pass


# ---------------------------------------------------------------------------------------- selection

probs_strategy = st.tuples(st.integers(1, 40), st.integers(1, 6), st.integers(0, 10_000)).map(
    lambda t: torch.softmax(3 * torch.randn(t[0], t[1], generator=torch.Generator().manual_seed(t[2])), dim=1))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(probs=probs_strategy, threshold=st.floats(0.01, 1.0))
def test_threshold_selection_keeps_exactly_the_confident(probs, threshold):
    sel = select_pseudo_labels(probs, threshold=threshold)
    conf = probs.max(1).values
    mask = torch.zeros(len(probs), dtype=torch.bool)
    mask[sel] = True
    assert bool((conf[mask] >= threshold).all()) and bool((conf[~mask] < threshold).all())
    assert torch.equal(sel, torch.unique(sel))  # distinct and ascending


@settings(max_examples=60, deadline=None, derandomize=True)
@given(probs=probs_strategy, k=st.integers(1, 5), threshold=st.one_of(st.none(), st.floats(0.05, 0.99)),
       drop=st.integers(0, 10_000))
def test_topk_is_class_balanced_and_takes_the_most_confident(probs, k, threshold, drop):
    candidates = torch.rand(len(probs), generator=torch.Generator().manual_seed(drop)) > 0.3
    sel = select_pseudo_labels(probs, threshold=threshold, k_per_class=k, candidates=candidates)
    conf, pred = probs.max(1)
    assert torch.equal(sel, torch.unique(sel))
    assert bool(candidates[sel].all())
    chosen = torch.zeros(len(probs), dtype=torch.bool)
    chosen[sel] = True
    eligible = candidates & (conf >= threshold if threshold is not None else True)
    for c in range(probs.shape[1]):
        in_class = eligible & (pred == c)
        picked = chosen & (pred == c)
        assert int(picked.sum()) == min(k, int(in_class.sum()))
        if picked.any() and (in_class & ~picked).any():
            assert float(conf[in_class & ~picked].max()) <= float(conf[picked].min())
    assert not bool((chosen & ~eligible).any())


def test_selection_examples_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.05, 0.95]])
    assert select_pseudo_labels(probs, threshold=0.8).tolist() == [0, 1, 4]
    assert select_pseudo_labels(probs, k_per_class=1).tolist() == [0, 4]
    assert select_pseudo_labels(probs, threshold=0.75, k_per_class=1).tolist() == [0, 4]
    assert select_pseudo_labels(probs, threshold=0.75, k_per_class=2).tolist() == [0, 1, 4]
    assert select_pseudo_labels(probs, threshold=1.0).tolist() == []
    # ties go to the lower position
    assert select_pseudo_labels(torch.tensor([[0.5, 0.5], [0.5, 0.5]]), k_per_class=1).tolist() == [0]


# -------------------------------------------------------------------------------------- round loop


def test_self_training_gains_accuracy_on_a_separable_toy_set(toy):
    labelled, pool, test = toy
    cfg = SelfTrainConfig(rounds=3, threshold=None, k_per_class=10, epochs=30, batch_size=16, lr=1e-2)
    res = self_train("mlp", labelled, pool, cfg, backbone_kwargs=MLP, test=test, log=quiet)
    accs = [r.accuracy for r in res.rounds]
    assert len(res.rounds) == 4 and res.stop_reason == "completed 3 rounds"
    assert accs[-1] >= accs[0] + 0.08, accs
    assert min(r.precision for r in res.rounds[1:]) > 0.9
    # the same seed gives the same run
    again = self_train("mlp", labelled, pool, cfg, backbone_kwargs=MLP, test=test, log=None)
    assert [r.accuracy for r in again.rounds] == accs


def test_no_example_is_selected_twice_and_stats_add_up(toy):
    labelled, pool, test = toy
    cfg = SelfTrainConfig(rounds=4, threshold=0.5, k_per_class=7, epochs=30, batch_size=16, lr=1e-2)
    res = self_train("mlp", labelled, pool, cfg, backbone_kwargs=MLP, test=test, log=quiet)
    everything = torch.cat(res.selections)
    assert len(everything) == len(torch.unique(everything))  # neither within nor across rounds
    used = 0
    for stats, sel, labels in zip(res.rounds[1:], res.selections, res.pseudo_labels):
        used += len(sel)
        assert stats.added == len(sel) and stats.pseudo_labelled == used
        assert stats.pool_left == len(pool) - used
        assert stats.train_size == len(labelled) + used
        assert torch.bincount(labels, minlength=4).max() <= 7
        assert stats.precision_added == pytest.approx(float((labels == pool.targets[sel]).float().mean()))
    all_labels = torch.cat(res.pseudo_labels)
    assert res.rounds[-1].precision == pytest.approx(float((all_labels == pool.targets[everything]).float().mean()))


class Uniform(nn.Module):
    """Always equally unsure: no prediction ever passes a threshold above 1 / classes."""

    def __init__(self, classes=4):
        super().__init__()
        self.classes = classes
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.zeros(len(x), self.classes) + 0 * self.bias


def test_an_empty_selection_ends_the_loop_with_a_message(toy):
    labelled, pool, test = toy
    messages = []
    res = self_train(Uniform, labelled, pool, SelfTrainConfig(rounds=3, threshold=0.5, epochs=1),
                     test=test, log=messages.append)
    assert len(res.rounds) == 1 and res.selections == []
    assert "round 1: no unlabelled example passed the selection (threshold=0.5" in res.stop_reason
    assert "stopping after 0 round(s)" in res.stop_reason and messages[-1] == res.stop_reason


def test_fixed_steps_per_round(toy):
    labelled, pool, _ = toy
    cfg = SelfTrainConfig(rounds=2, threshold=None, k_per_class=20, steps=7, batch_size=16)
    res = self_train("mlp", labelled, pool, cfg, backbone_kwargs=MLP, log=None)
    assert [r.steps for r in res.rounds] == [7, 7, 7]
    assert res.rounds[2].train_size > 16 * 7 > res.rounds[0].train_size  # fewer than one pass, then many


def test_a_used_up_pool_ends_the_loop(toy):
    labelled, _, test = toy
    pool = blobs(n_per_class=2, seed=5)
    messages = []
    res = self_train("mlp", labelled, pool, SelfTrainConfig(rounds=5, threshold=None, k_per_class=100, epochs=2),
                     backbone_kwargs=MLP, test=test, log=messages.append)
    assert res.rounds[-1].pool_left == 0 and len(res.rounds) < 6
    assert "used up" in res.stop_reason


def test_soft_labels_ema_teacher_and_continued_student_run(toy):
    labelled, pool, test = toy
    cfg = SelfTrainConfig(rounds=2, threshold=None, k_per_class=5, labels="soft", reinit=False, ema_decay=0.9, epochs=5,
                          batch_size=16, lr=1e-2, shift=1)
    res = self_train("mlp", labelled, pool, cfg, backbone_kwargs=MLP, test=test, log=None)
    assert len(res.rounds) == 3
    assert all(r.accuracy is not None and r.student_accuracy is not None for r in res.rounds)
    # the labelling model is the teacher: frozen, and not the student
    assert not any(p.requires_grad for p in res.model.parameters())


def test_pools_from_several_sources_with_unknown_truth(toy):
    labelled, pool, test = toy
    extra = UnlabelledImages(torch.rand(30, 1, 4, 4))
    merged = make_pool([pool, extra, torch.rand(5, 1, 4, 4)])
    assert len(merged) == len(pool) + 35 and merged.targets[len(pool):].eq(-1).all()
    only_unknown = make_pool(extra)
    res = self_train("mlp", labelled, only_unknown, SelfTrainConfig(rounds=1, threshold=None, k_per_class=3,
                                                                    epochs=2), backbone_kwargs=MLP, log=None)
    assert res.rounds[1].added > 0 and res.rounds[1].precision is None and res.rounds[1].accuracy is None


# ------------------------------------------------------------------------------------------ online


def test_lee_alpha_schedule():
    assert [lee_alpha(e, 3.0, 2, 4) for e in range(6)] == [0.0, 0.0, 0.0, 1.5, 3.0, 3.0]
    assert lee_alpha(7, 1.0, 0, 0) == 1.0


def test_online_masks_by_the_shared_selection_and_counts_each_example_once_per_epoch(toy):
    labelled, pool, test = toy
    cfg = OnlineConfig(epochs=4, threshold=0.7, k_per_class=3, batch_size=4, unlabelled_batch_size=32, lr=1e-2,
                       ramp_start=1, ramp_end=2)
    res = pseudo_label_online("mlp", labelled, pool, cfg, backbone_kwargs=MLP, test=test, log=None)
    assert [r.round for r in res.rounds] == [0, 1, 2, 3, 4]
    assert [r.alpha for r in res.rounds[1:]] == [0.0, 0.0, 3.0, 3.0]
    n_batches = -(-len(pool) // 32)
    for stats, sel, labels in zip(res.rounds[1:], res.selections, res.pseudo_labels):
        assert len(sel) == len(torch.unique(sel)) == stats.added
        assert len(sel) <= 3 * 4 * n_batches  # at most k per class per batch
        if len(sel):
            assert stats.precision == pytest.approx(float((labels == pool.targets[sel]).float().mean()))
    assert sum(r.added for r in res.rounds[1:]) > 0


def test_online_with_an_ema_teacher(toy):
    labelled, pool, test = toy
    cfg = OnlineConfig(epochs=2, threshold=0.5, ema_decay=0.9, labels="soft", batch_size=4, unlabelled_batch_size=64,
                       ramp_start=0, ramp_end=1)
    res = pseudo_label_online("mlp", labelled, pool, cfg, backbone_kwargs=MLP, test=test, log=None)
    assert len(res.rounds) == 3 and not any(p.requires_grad for p in res.model.parameters())


# ----------------------------------------------------------------------------------------- helpers


def test_ema_teacher_follows_the_ramped_average():
    student = nn.Linear(2, 1)
    teacher = EMATeacher(student, decay=0.9)
    before = teacher.model.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher(student, 1)  # first step: d = min(0.9, 1 - 1/2) = 0.5
    assert torch.allclose(teacher.model.weight, 0.5 * before + 0.5 * student.weight)
    for _ in range(100):
        teacher(student)
    assert torch.allclose(teacher.model.weight, student.weight, atol=1e-4)


def test_ema_teacher_recalibrates_batchnorm_statistics_for_its_own_weights():
    student = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    teacher = EMATeacher(student, decay=0.9)
    with torch.no_grad():
        teacher.model[0].weight.mul_(3.0)  # the averaged weights differ from the student's
    x = torch.rand(40, 1, 3, 3)
    teacher.recalibrate(x, batch_size=8)
    feats = teacher.model[0](x).detach()
    norm = teacher.model[1]
    assert torch.allclose(norm.running_mean, feats.mean((0, 2, 3)), atol=1e-5)
    assert norm.momentum == 0.1 and norm.running_var.gt(0).all()
    EMATeacher(nn.Linear(2, 2)).recalibrate(torch.rand(3, 2))  # no BatchNorm: nothing to do


def test_after_step_hook_of_the_shared_loop():
    data = blobs(n_per_class=10)
    calls = []
    hist = train_classifier(create_backbone("mlp", num_classes=4, **MLP), data, epochs=2, batch_size=16,
                            after_step=lambda m, s: calls.append(s), progress=False)
    assert calls == list(range(1, hist.steps + 1)) and hist.steps == 6


def test_random_shift_moves_content_and_keeps_shape():
    x = torch.zeros(50, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    g = torch.Generator().manual_seed(0)
    y = random_shift(x, 2, g)
    assert y.shape == x.shape and torch.equal(y.sum((1, 2, 3)), x.sum((1, 2, 3)))
    assert len({tuple(torch.nonzero(img[0])[0].tolist()) for img in y}) > 5
    assert random_shift(x, 0, g) is x


def test_split_labelled_unlabelled():
    data = blobs(n_per_class=6, classes=3)
    lab, pool = split_labelled_unlabelled(data, 2, seed=3)
    assert torch.bincount(lab.targets).tolist() == [2, 2, 2] and len(pool) == 12
    again, _ = split_labelled_unlabelled(data, 2, seed=3)
    assert torch.equal(again.images, lab.images)
    with pytest.raises(DatasetError, match="has 6 examples; per_class=6 must leave at least one"):
        split_labelled_unlabelled(data, 6)


# --------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("threshold", [0, 0.0, -0.1, 1.5, True, "0.9"])
def test_threshold_outside_the_unit_interval_is_refused(threshold):
    with pytest.raises(ConfigError, match=r"threshold must be a probability in \(0, 1\], got"):
        SelfTrainConfig(threshold=threshold)
    with pytest.raises(ConfigError, match=r"threshold must be a probability in \(0, 1\]"):
        select_pseudo_labels(torch.full((2, 2), 0.5), threshold=threshold)


@pytest.mark.parametrize("k", [0, -3, 1.5])
def test_k_below_one_is_refused(k):
    with pytest.raises(ConfigError, match=f"k_per_class must be an integer >= 1, got {k}"):
        SelfTrainConfig(threshold=None, k_per_class=k)
    with pytest.raises(ConfigError, match="k_per_class must be an integer >= 1"):
        OnlineConfig(k_per_class=k)


def test_other_bad_options():
    with pytest.raises(ConfigError, match="needs a threshold in \\(0, 1\\] and/or k_per_class >= 1; got neither"):
        SelfTrainConfig(threshold=None)
    with pytest.raises(ConfigError, match="labels must be one of hard, soft, got 'medium'"):
        SelfTrainConfig(labels="medium")
    with pytest.raises(ConfigError, match=r"ema_decay must be in \(0, 1\)"):
        SelfTrainConfig(ema_decay=1.0)
    with pytest.raises(ConfigError, match="rounds must be an integer >= 1, got 0"):
        SelfTrainConfig(rounds=0)
    with pytest.raises(ConfigError, match="ramp_end \\(1\\) must be >= ramp_start \\(3\\)"):
        OnlineConfig(ramp_start=3, ramp_end=1)


def test_bad_data_is_refused(toy):
    labelled, pool, _ = toy
    cfg = SelfTrainConfig(epochs=1)
    with pytest.raises(ConfigError, match=r"the unlabelled pool is empty \(0 images\)"):
        self_train("mlp", labelled, torch.zeros(0, 1, 4, 4), cfg, backbone_kwargs=MLP)
    with pytest.raises(ConfigError, match="the unlabelled pool is empty: give at least one source"):
        self_train("mlp", labelled, [], cfg, backbone_kwargs=MLP)
    with pytest.raises(ConfigError, match="labelled images are 1x4x4 but unlabelled images are 1x28x28"):
        self_train("mlp", labelled, UnlabelledImages(torch.rand(3, 1, 28, 28)), cfg, backbone_kwargs=MLP)
    with pytest.raises(ConfigError, match="unlabelled sources have different image shapes: 1x4x4 and 3x4x4"):
        make_pool([pool, torch.rand(2, 3, 4, 4)])
    with pytest.raises(ConfigError, match=r"must be floats in \[0, 1\].*got values in \[0, 255\]"):
        make_pool(torch.full((2, 1, 4, 4), 255.0).index_fill_(0, torch.tensor([0]), 0.0))
    with pytest.raises(ConfigError, match="the labelled set is empty"):
        self_train("mlp", labelled.select(torch.zeros(len(labelled), dtype=torch.bool)), pool, cfg,
                   backbone_kwargs=MLP)
    with pytest.raises(ConfigError, match="labelled images are 1x4x4 but test images are 1x5x5"):
        self_train("mlp", labelled, pool, cfg, backbone_kwargs=MLP, test=LabelledImages(torch.rand(2, 1, 5, 5),
                                                                                       torch.zeros(2)))
