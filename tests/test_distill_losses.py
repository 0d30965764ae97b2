"""The knowledge-distillation loss (Hinton et al. 2015): hand-computed values, the T^2 factor, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from mtl.distill import kd_loss, soft_target_loss
from mtl.errors import ConfigError

LOG2, LOG3 = math.log(2), math.log(3)
# teacher p = (3/4, 1/4), student q = (1/2, 1/2):  KL(p || q) = 3/4 log(3/2) + 1/4 log(1/2)
KL = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def test_hand_computed_values_at_t1_and_t2():
    student = torch.tensor([[0.0, 0.0]])
    label = torch.tensor([0])
    assert KL == pytest.approx(0.1308121, abs=1e-6)
    # T = 1: the teacher's logits (log 3, 0) give p = (3/4, 1/4); CE of the student = log 2.
    teacher = torch.tensor([[LOG3, 0.0]])
    assert kd_loss(student, teacher, label, temperature=1, alpha=0.5).item() == pytest.approx(0.5 * LOG2 + 0.5 * KL)
    assert kd_loss(student, teacher, label, temperature=1, alpha=0.0).item() == pytest.approx(KL)
    # T = 2: teacher logits (2 log 3, 0) / 2 give the same p; the soft term is multiplied by T^2 = 4,
    # also when alpha = 0; the hard term stays at temperature 1.
    teacher = torch.tensor([[2 * LOG3, 0.0]])
    assert kd_loss(student, teacher, label, temperature=2, alpha=0.0).item() == pytest.approx(4 * KL)
    assert kd_loss(student, teacher, label, temperature=2, alpha=0.25).item() == pytest.approx(
        0.25 * LOG2 + 0.75 * 4 * KL)
    assert soft_target_loss(student, teacher, 2).item() == pytest.approx(4 * KL)


def test_matches_an_independent_formula_on_random_logits():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (5,), generator=g)
    T, a = 3.0, 0.3
    total = 0.0
    for i in range(5):
        p = [math.exp(v / T) for v in t[i].tolist()]
        q = [math.exp(v / T) for v in s[i].tolist()]
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        ce = -s[i, y[i]].item() + math.log(sum(math.exp(v) for v in s[i].tolist()))
        total += a * ce + (1 - a) * T * T * kl
    assert kd_loss(s, t, y, T, a).item() == pytest.approx(total / 5, rel=1e-9)
    per = kd_loss(s, t, y, T, a, reduction="none")
    assert per.shape == (5,) and per.sum().item() == pytest.approx(kd_loss(s, t, y, T, a, reduction="sum").item())


def test_alpha_one_is_cross_entropy():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    ce = F.cross_entropy(s, y)
    assert torch.allclose(kd_loss(s, t, y, temperature=5, alpha=1.0), ce)
    assert torch.allclose(kd_loss(s, None, y, temperature=5, alpha=1.0), ce)  # no teacher needed


def test_soft_term_is_zero_when_student_equals_teacher_and_teacher_gets_no_gradient():
    z = torch.randn(4, 6)
    assert soft_target_loss(z, z, 3.0).abs().item() < 1e-6
    s, t = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    kd_loss(s, t, None, 2.0, 0.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def _soft_grad_norm(s0: torch.Tensor, t: torch.Tensor, T: float, scale: float) -> float:
    s = s0.clone().requires_grad_()
    (soft_target_loss(s, t, T) * scale).backward()
    return s.grad.norm().item()


def test_t_squared_keeps_the_soft_gradient_comparable_across_temperatures():
    g = torch.Generator().manual_seed(0)
    s0, t = 3 * torch.randn(64, 10, generator=g), 3 * torch.randn(64, 10, generator=g)
    temps = [2.0, 4.0, 8.0, 16.0, 32.0]
    with_t2 = [_soft_grad_norm(s0, t, T, 1.0) for T in temps]
    without = [_soft_grad_norm(s0, t, T, 1.0 / T**2) for T in temps]  # the KL alone
    assert max(with_t2) / min(with_t2) < 1.5
    # Without the factor the gradient shrinks like 1/T^2: 256x over this range.
    assert without[0] / without[-1] > 100


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf"), True, "4"])
def test_bad_temperature(temperature):
    z = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        kd_loss(z, z, torch.zeros(2, dtype=torch.long), temperature=temperature)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), None])
def test_bad_alpha(alpha):
    z = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match=r"alpha .* must be in \[0, 1\]"):
        kd_loss(z, z, torch.zeros(2, dtype=torch.long), alpha=alpha)


def test_teacher_and_student_with_different_numbers_of_classes():
    with pytest.raises(ConfigError, match="the teacher has 5 classes but the student has 3"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))


def test_missing_inputs_and_bad_shapes():
    z = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match="teacher_logits are needed"):
        kd_loss(z, None, torch.zeros(2, dtype=torch.long), alpha=0.5)
    with pytest.raises(ConfigError, match="targets are needed"):
        kd_loss(z, z, None, alpha=0.5)
    with pytest.raises(ConfigError, match="student_logits must be a float tensor"):
        kd_loss(torch.zeros(3), z, None, alpha=0.0)
    with pytest.raises(ConfigError, match="reduction must be one of"):
        kd_loss(z, z, None, alpha=0.0, reduction="avg")
    with pytest.raises(ConfigError, match="for 4 samples but student logits for 2"):
        kd_loss(z, torch.zeros(4, 3), None, alpha=0.0)
