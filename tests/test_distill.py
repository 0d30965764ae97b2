"""Teacher -> student distillation (Hinton et al. 2015), teachers and caching, Born-Again Networks."""

import pytest
import torch
from torch import nn

from mtl.backbones import create_backbone
from mtl.data.base import LabelledImages
from mtl.distill import (
    CachedLogits,
    DistillConfig,
    EnsembleTeacher,
    agreement,
    born_again,
    distill,
    ensemble_logits,
    random_shift,
    train_from_scratch,
)
from mtl.errors import ConfigError
from mtl.training import predict_logits, train_classifier


def toy(n: int, seed: int, classes: int = 4, spread: float = 1.5) -> LabelledImages:
    """Overlapping Gaussian blobs in 16 dimensions, shaped as 1x4x4 images."""
    centers = torch.randn(classes, 16, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    return LabelledImages((centers[y] + spread * torch.randn(n, 16, generator=g)).view(n, 1, 4, 4), y)


def mlp_kwargs(hidden: int = 16, classes: int = 4) -> dict:
    return {"in_features": 16, "hidden": [hidden], "num_classes": classes}


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    cfg = DistillConfig(epochs=8, batch_size=100, lr=0.01, seed=0)
    return train_from_scratch("mlp", toy(1000, 1), cfg, backbone_kwargs=mlp_kwargs(32)).model


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_distilled_student_agrees_with_its_teacher_more_than_one_trained_without(teacher):
    small, test = toy(40, 10), toy(500, 2)
    cfg = DistillConfig(epochs=30, batch_size=20, lr=0.01, alpha=0.0, temperature=2.0, seed=0)
    scratch = train_from_scratch("mlp", small, cfg, backbone_kwargs=mlp_kwargs(), test=test, reference=teacher)
    taught = distill(teacher, "mlp", small, cfg, backbone_kwargs=mlp_kwargs(), test=test)
    assert taught.teacher_accuracy == scratch.teacher_accuracy > 0.8
    # measured: 0.81 without the teacher, 0.97 distilled
    assert taught.agreement > scratch.agreement + 0.05
    assert taught.agreement == pytest.approx(agreement(taught.test_logits, predict_logits(teacher, test.images)))


def test_cached_and_online_teacher_give_the_same_student(teacher):
    # Without augmentation the cached logits (looked up by sample position) must equal what the
    # teacher computes on each shuffled batch, so both runs must end with identical weights.
    data = toy(60, 3)
    cfg = DistillConfig(epochs=3, batch_size=16, lr=0.01, seed=1)
    cached = distill(teacher, "mlp", data, cfg, backbone_kwargs=mlp_kwargs()).model
    online = distill(teacher, "mlp", data, DistillConfig(epochs=3, batch_size=16, lr=0.01, seed=1,
                                                        cache_teacher=False), backbone_kwargs=mlp_kwargs()).model
    assert same_weights(cached, online)
    shuffled = distill(teacher, "mlp", data.select(torch.randperm(60)), cfg, backbone_kwargs=mlp_kwargs()).model
    assert not same_weights(cached, shuffled)  # the comparison can fail


class CountingTeacher(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls, self.seen = inner, 0, []
        self.num_classes = 4  # declared, so no forward pass is spent on finding it out

    def forward(self, x):
        self.calls += 1
        self.seen.append(x.clone())
        return self.inner(x)


def test_cache_is_looked_up_by_sample_index_whatever_the_batch_order_and_augmentation(teacher):
    data = toy(50, 4)
    cache = CachedLogits.from_teacher(teacher, data)
    index = torch.tensor([7, 3, 49, 0, 3])
    assert torch.allclose(cache[index], predict_logits(teacher, data.images[index]), atol=1e-6)
    # Augmenting the batch does not change what the cache returns for those samples.
    shifted = random_shift(data.images[index], 1, torch.Generator().manual_seed(0))
    assert not torch.equal(shifted, data.images[index])
    assert torch.equal(cache[index], CachedLogits.from_teacher(teacher, data)[index])

    counting = CountingTeacher(teacher)
    cfg = DistillConfig(epochs=3, batch_size=10, lr=0.01, shift=1, seed=0)
    distill(counting, "mlp", data, cfg, backbone_kwargs=mlp_kwargs())
    assert counting.calls == 1  # one pass over the 50 clean images, not one per step
    assert torch.equal(counting.seen[0], data.images)
    counting.calls = 0
    distill(counting, "mlp", data, DistillConfig(epochs=3, batch_size=10, lr=0.01, shift=1, seed=0,
                                                 cache_teacher=False), backbone_kwargs=mlp_kwargs())
    assert counting.calls == 15  # the teacher sees every augmented batch


def test_cache_refuses_a_reordered_or_different_training_set(teacher):
    data = toy(30, 5)
    cache = CachedLogits.from_teacher(teacher, data)
    cache.check(data)
    with pytest.raises(ConfigError, match="reordered or changed after caching"):
        distill(cache, "mlp", data.select(torch.arange(29, -1, -1)), backbone_kwargs=mlp_kwargs())
    with pytest.raises(ConfigError, match="cached for 30 samples but the training set has 20"):
        distill(cache, "mlp", data.select(torch.arange(20)), backbone_kwargs=mlp_kwargs())
    # A matching cache trains exactly like the teacher module itself.
    cfg = DistillConfig(epochs=2, batch_size=8, lr=0.01)
    assert same_weights(distill(cache, "mlp", data, cfg, backbone_kwargs=mlp_kwargs()).model,
                        distill(teacher, "mlp", data, cfg, backbone_kwargs=mlp_kwargs()).model)


def test_teacher_stays_frozen_and_in_its_mode(teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.zero_grad(set_to_none=True)
    teacher.train()
    distill(teacher, "mlp", toy(30, 6), DistillConfig(epochs=2, batch_size=8, cache_teacher=False),
            backbone_kwargs=mlp_kwargs())
    assert teacher.training
    teacher.eval()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())


def test_alpha_one_trains_exactly_like_plain_cross_entropy():
    data = toy(40, 7)
    cfg = DistillConfig(epochs=2, batch_size=8, lr=0.01, seed=3)
    ours = train_from_scratch("mlp", data, cfg, backbone_kwargs=mlp_kwargs()).model
    torch.manual_seed(3)
    plain = create_backbone("mlp", **mlp_kwargs())
    train_classifier(plain, data, epochs=2, batch_size=8, lr=0.01, seed=3, progress=False)
    assert same_weights(ours, plain)


def test_ensemble_teacher_combines_logits_or_probabilities():
    torch.manual_seed(0)
    a, b = create_backbone("mlp", **mlp_kwargs(8)), create_backbone("mlp", **mlp_kwargs(8))
    x = torch.randn(5, 1, 4, 4)
    za, zb = a(x), b(x)
    assert torch.allclose(EnsembleTeacher([a, b])(x), (za + zb) / 2, atol=1e-6)
    probs = EnsembleTeacher([a, b], combine="probs")(x).softmax(1)
    assert torch.allclose(probs, (za.softmax(1) + zb.softmax(1)) / 2, atol=1e-6)
    weighted = EnsembleTeacher([a, b], weights=[3, 1])(x)
    assert torch.allclose(weighted, 0.75 * za + 0.25 * zb, atol=1e-6)
    assert torch.allclose(ensemble_logits([za, zb]).softmax(1), probs, atol=1e-6)
    with pytest.raises(ConfigError, match="different numbers of classes"):
        EnsembleTeacher([a, create_backbone("mlp", **mlp_kwargs(8, classes=3))])
    with pytest.raises(ConfigError, match="at least one member"):
        EnsembleTeacher([])
    with pytest.raises(ConfigError, match="combine must be one of"):
        EnsembleTeacher([a], combine="vote")


def test_a_list_of_teachers_is_distilled_as_their_ensemble(teacher):
    data, test = toy(40, 8), toy(100, 9)
    other = train_from_scratch("mlp", toy(300, 11), DistillConfig(epochs=3, lr=0.01, seed=5),
                               backbone_kwargs=mlp_kwargs(8)).model
    cfg = DistillConfig(epochs=2, batch_size=8, lr=0.01)
    res = distill([teacher, other], "mlp", data, cfg, backbone_kwargs=mlp_kwargs(), test=test)
    same = distill(EnsembleTeacher([teacher, other]), "mlp", data, cfg, backbone_kwargs=mlp_kwargs(), test=test)
    assert same_weights(res.model, same.model)
    expected = (predict_logits(teacher, test.images) + predict_logits(other, test.images)) / 2
    assert res.teacher_accuracy == pytest.approx(float((expected.argmax(1) == test.targets).float().mean()))


def test_bad_input_gives_clear_errors(teacher):
    data = toy(20, 12)
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        DistillConfig(temperature=0)
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        DistillConfig(temperature=-2.0)
    with pytest.raises(ConfigError, match=r"alpha .* must be in \[0, 1\], got 1.5"):
        DistillConfig(alpha=1.5)
    with pytest.raises(ConfigError, match=r"alpha .* must be in \[0, 1\], got -0.5"):
        DistillConfig(alpha=-0.5)
    with pytest.raises(ConfigError, match="the teacher predicts 4 classes but the student predicts 3"):
        distill(teacher, "mlp", data, backbone_kwargs=mlp_kwargs(classes=3))
    five = create_backbone("mlp", **mlp_kwargs(classes=5))
    with pytest.raises(ConfigError, match="the teacher predicts 5 classes but the student predicts 4"):
        distill(five, "mlp", data, backbone_kwargs=mlp_kwargs())
    with pytest.raises(ConfigError, match="the teacher predicts 5 classes"):
        distill(five, "mlp", data, DistillConfig(alpha=1.0), backbone_kwargs=mlp_kwargs())
    with pytest.raises(ConfigError, match="no teacher given: only alpha=1"):
        distill(None, "mlp", data, backbone_kwargs=mlp_kwargs())
    with pytest.raises(ConfigError, match="must be an nn.Module, a list of them"):
        distill("conv4", "mlp", data, backbone_kwargs=mlp_kwargs())


def test_born_again_generations_and_their_ensemble():
    data, test = toy(80, 13), toy(200, 14)
    cfg = DistillConfig(epochs=10, batch_size=20, lr=0.01, alpha=0.0, temperature=1.0, seed=0)
    lines = []
    res = born_again("mlp", data, 2, cfg, backbone_kwargs=mlp_kwargs(8), test=test, log=lines.append)
    assert [g.generation for g in res.generations] == [0, 1, 2] and len(res.models) == 3
    assert res.generations[0].ensemble_accuracy is None and res.generations[0].steps == 40
    shapes = [[p.shape for p in m.parameters()] for m in res.models]
    assert shapes[0] == shapes[1] == shapes[2]  # every generation has the teacher's architecture
    assert not same_weights(res.models[1], res.models[2])
    for k, g in enumerate(res.generations):
        logits = predict_logits(res.models[k], test.images)
        assert g.accuracy == pytest.approx(float((logits.argmax(1) == test.targets).float().mean()))
    ens = predict_logits(res.ensemble(), test.images)
    assert res.ensemble_accuracy == pytest.approx(float((ens.argmax(1) == test.targets).float().mean()))
    assert res.generations[1].ensemble_accuracy == res.generations[1].accuracy
    prev = predict_logits(res.models[1], test.images)
    assert res.generations[2].agreement == pytest.approx(agreement(predict_logits(res.models[2], test.images), prev))
    assert len(lines) == 4 and lines[0].startswith("generation 0: test accuracy")
    assert "ensemble of generations 1-2" in lines[-1]
    assert set(res.to_dict()) >= {"generations", "ensemble_accuracy", "ensemble_with_teacher_accuracy"}

    # A given generation 0 is used as it is.
    again = born_again("mlp", data, 1, cfg, teacher=res.models[0], backbone_kwargs=mlp_kwargs(8), test=test, log=None)
    assert again.generations[0].steps == 0 and again.generations[0].accuracy == res.generations[0].accuracy
    assert same_weights(again.models[1], res.models[1])

    with pytest.raises(ConfigError, match="generations must be an integer >= 1, got 0"):
        born_again("mlp", data, 0, backbone_kwargs=mlp_kwargs(8))
    with pytest.raises(ConfigError, match="not a module"):
        born_again(res.models[0], data, 1)
