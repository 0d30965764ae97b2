"""ProtoNet's evaluation cache: each distinct image embedded once, the same results as without it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from meta.evaluation import evaluate
from meta.protonet import EmbeddingEnsemble, ProtoNet
from mtl import create_backbone


def _net(seed=0):
    torch.manual_seed(seed)
    net = create_backbone("conv4", in_channels=1, image_size=16, hidden=4).double()
    with torch.no_grad():  # running statistics that differ from the defaults, so eval mode matters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net


class _Pool:
    """Tasks drawn from a fixed pool of 12 images of 4 classes, as a test split is."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(4, 3, 1, 16, 16, generator=g).double()
        self.g = torch.Generator().manual_seed(seed + 1)

    def __call__(self, index):
        order = torch.randperm(3, generator=self.g)
        sx = self.images[:, order[0]][None]  # 1-shot, classes 0..3
        qx = self.images[:, order[1:]].flatten(0, 1)[None]
        task = type("Task", (), {})()
        task.support_x, task.support_y = sx, torch.arange(4)[None]
        task.query_x, task.query_y = qx, torch.arange(4).repeat_interleave(2)[None]
        return task


def _without_cache(algo, num_tasks, seed=0):
    source, per_task = _Pool(seed), []
    algo.eval()
    for i in range(num_tasks):
        t = source(i)
        per_task.append(algo.evaluate_task(t.support_x[0], t.support_y[0], t.query_x[0], t.query_y[0]))
    return per_task


@pytest.mark.parametrize("options", [{}, {"test_shift": 1, "test_rotate": 10.0}, {"transductive_steps": 2}])
def test_cached_evaluation_equals_uncached(options):
    algo = ProtoNet(_net(), **options)
    plain = _without_cache(algo, 20)
    result = evaluate(algo, _Pool(), num_tasks=20, progress=False)
    assert result["accuracy"] == pytest.approx(sum(m["accuracy"] for m in plain) / 20, abs=1e-12)
    assert result["loss"] == pytest.approx(sum(m["loss"] for m in plain) / 20, rel=1e-9)
    assert algo._cache is None  # dropped after the run


def test_each_distinct_image_is_embedded_once():
    algo = ProtoNet(_net(), test_shift=1).eval()
    calls = []
    original = algo._embed_views

    def counting(params, x):
        calls.append(x.shape[0])
        return original(params, x)

    algo._embed_views = counting
    source = _Pool()
    with algo.embedding_cache() as cache, torch.no_grad():
        for i in range(30):
            t = source(i)
            algo.evaluate_task(t.support_x[0], t.support_y[0], t.query_x[0], t.query_y[0])
    assert sum(calls) == 12 == cache.misses  # the pool's 12 images, whatever the 30 tasks drew
    assert cache.hits == 30 * 12 - 12


def test_cache_drops_stale_embeddings_and_is_bypassed_when_training():
    algo = ProtoNet(_net())
    t = _Pool()(0)
    args = (t.support_x[0], t.support_y[0], t.query_x[0], t.query_y[0])
    opt = torch.optim.SGD(algo.parameters(), lr=0.5)
    with algo.embedding_cache() as cache:
        before = algo.eval().evaluate_task(*args)
        misses = cache.misses
        loss, _ = algo.train().outer_loss(*(a[None] for a in args))  # train mode, with grad: not cached
        assert cache.misses == misses
        loss.backward()
        opt.step()  # the network changes in place: its stored embeddings are stale
        after = algo.eval().evaluate_task(*args)
    fresh = algo.evaluate_task(*args)  # no cache
    assert after["loss"] == pytest.approx(fresh["loss"], rel=1e-9)
    assert after["loss"] != pytest.approx(before["loss"], rel=1e-6)


def test_ensemble_and_nested_blocks_share_one_cache():
    algo = ProtoNet(EmbeddingEnsemble([_net(0), _net(1)]))
    plain = _without_cache(algo, 10)
    with algo.embedding_cache() as outer:
        result = evaluate(algo, _Pool(), num_tasks=10, progress=False)  # evaluate's block nests in ours
        assert outer.misses == 12 and algo._cache is outer
    assert result["loss"] == pytest.approx(sum(m["loss"] for m in plain) / 10, rel=1e-9)


def test_confusions_use_the_cache_and_match_uncached_predictions():
    from meta.evaluation import confused_pairs

    algo = ProtoNet(_net(), test_shift=1)
    source = _Pool()

    def with_classes(i):
        t = source(i)
        t.classes = torch.tensor([[10, 11, 12, 13]])
        return t

    result = confused_pairs(algo, with_classes, num_tasks=15, progress=False)
    plain, errors = _Pool(), 0
    algo.eval()
    for i in range(15):
        t = plain(i)
        pred = algo.adapt(t.support_x[0], t.support_y[0])(t.query_x[0]).argmax(-1)  # no cache active
        errors += int((pred != t.query_y[0]).sum())
    assert result["errors"] == errors and result["queries"] == 15 * 8


def test_adapted_predictor_with_other_weights_is_not_served_from_the_cache():
    algo = ProtoNet(_net()).eval()
    t = _Pool()(0)
    with algo.embedding_cache(), torch.no_grad():
        predictor = algo.adapt(t.support_x[0], t.support_y[0])
        before = predictor(t.query_x[0])
        predictor.params = {k: v * 1.5 for k, v in predictor.params.items()}
        after = predictor(t.query_x[0])
    assert not torch.allclose(before, after)
