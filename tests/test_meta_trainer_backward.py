"""MetaTrainer's task-by-task backward gives the update of ``outer_loss(...).backward()``."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from fewshot_helpers import make_tasks, tiny_conv

from meta import MAML, MetaTrainer, MetaTrainerConfig, ProtoNet
from mtl.utils import Budget


def _source(tasks):
    sx, sy, qx, qy = tasks
    return lambda i: SimpleNamespace(support_x=sx, support_y=sy, query_x=qx, query_y=qy)


def _manual_step(algo, tasks, lr):
    opt = torch.optim.Adam(algo.parameters(), lr=lr)
    loss, _ = algo.outer_loss(*tasks, iteration=0)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(algo.parameters(), 10.0)
    opt.step()


def test_trainer_step_matches_outer_loss_backward():
    for build in (lambda: MAML(tiny_conv(), inner_lr=0.1), lambda: ProtoNet(tiny_conv(classes=None))):
        tasks = make_tasks((1, 16, 16), tasks=3)
        torch.manual_seed(0)
        reference = build()
        torch.manual_seed(0)
        trained = build()
        assert hasattr(trained, "outer_backward")
        _manual_step(reference, tasks, 1e-2)
        cfg = MetaTrainerConfig(meta_lr=1e-2, validate_every=100, checkpoint_every=100, progress=False)
        MetaTrainer(trained, _source(tasks), None, cfg).fit(Budget(iterations=1))
        for (name, a), b in zip(reference.named_parameters(), trained.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
