"""Named checkpoints with metadata, partial restore by pattern, and refusing unsafe or mismatched files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from mtl.backbones import create_backbone
from mtl.errors import CheckpointError, ConfigError
from mtl.transfer import (
    build_from_checkpoint,
    load_partial,
    read_named_checkpoint,
    replace_head,
    save_named_checkpoint,
)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def source_model():
    torch.manual_seed(1)
    return create_backbone("conv4", hidden=4, num_classes=5)


def fresh_model(num_classes: int = 5):
    torch.manual_seed(2)
    return create_backbone("conv4", hidden=4, num_classes=num_classes)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_keeps_names_and_metadata_and_rebuilds(tmp_path, suffix):
    src = source_model()
    path = save_named_checkpoint(tmp_path / f"m{suffix}", src, extra={"source": "glyphs", "classes": (1, 2)})
    ckpt = read_named_checkpoint(path)
    assert set(ckpt.state_dict) == set(src.state_dict())
    assert ckpt.metadata["backbone"] == "conv4"
    assert ckpt.metadata["backbone_kwargs"]["hidden"] == 4
    assert ckpt.metadata["head"] == {"in_features": src.out_features, "out_features": 5}
    assert ckpt.metadata["extra"] == {"source": "glyphs", "classes": [1, 2]}
    rebuilt = build_from_checkpoint(path)
    for name, value in src.state_dict().items():
        assert torch.equal(value, rebuilt.state_dict()[name]), name
    with pytest.raises(ConfigError, match="already exists"):
        save_named_checkpoint(path, src)


def test_partial_restore_touches_exactly_what_the_pattern_names(tmp_path):
    src, dst = source_model(), fresh_model()
    path = save_named_checkpoint(tmp_path / "m.pt", src)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    report = load_partial(dst, path, r"^features\.block[12]\.")
    selected = [n for n in before if n.startswith(("features.block1.", "features.block2."))]
    assert sorted(report.matched) == sorted(selected)
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatched == []
    assert sorted(report.untouched) == sorted(set(before) - set(selected))
    after = dst.state_dict()
    for name in before:
        expected = src.state_dict()[name] if name in selected else before[name]
        assert torch.equal(after[name], expected), name
    assert f"{len(selected)} restored" in report.summary()


def test_missing_and_unexpected_are_reported(tmp_path):
    src = create_backbone("conv4", hidden=4, num_blocks=3, num_classes=5)
    dst = fresh_model()
    report = load_partial(dst, save_named_checkpoint(tmp_path / "m.pt", src), r"^features\.")
    assert report.missing and all(n.startswith("features.block4.") for n in report.missing)
    assert report.unexpected == []
    with pytest.raises(CheckpointError, match="block4"):
        load_partial(dst, tmp_path / "m.pt", r"^features\.", strict=True)


def test_pattern_matching_nothing_is_refused(tmp_path):
    path = save_named_checkpoint(tmp_path / "m.pt", source_model())
    with pytest.raises(ConfigError, match=r"hidden\[123\].*features\.block1"):
        load_partial(fresh_model(), path, "hidden[123]")


def test_shape_mismatch_names_the_tensors(tmp_path):
    path = save_named_checkpoint(tmp_path / "m.pt", source_model())
    dst = fresh_model(num_classes=2)
    with pytest.raises(CheckpointError, match=r"head\.weight: checkpoint \(5, 4\) vs model \(2, 4\)"):
        load_partial(dst, path)
    report = load_partial(dst, path, on_shape_mismatch="skip")
    assert {n for n, _, _ in report.shape_mismatched} == {"head.weight", "head.bias"}
    assert torch.equal(dst.features.block1.conv.weight, source_model().features.block1.conv.weight)


def test_checkpoint_from_another_backbone_is_refused(tmp_path):
    path = save_named_checkpoint(tmp_path / "m.pt", create_backbone("mlp", in_features=784, hidden=[8]))
    with pytest.raises(CheckpointError, match="'mlp' backbone.*'conv4'"):
        load_partial(fresh_model(), path, ".*")


def test_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"features.block1.conv.weight": torch.zeros(1), "x": Evil()}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        load_partial(fresh_model(), path, ".*")
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(CheckpointError):
        read_named_checkpoint(raw)


def test_bare_state_dict_and_corrupt_safetensors(tmp_path):
    src = source_model()
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    dst = fresh_model()
    report = load_partial(dst, tmp_path / "plain.pt", r"^head\.")
    assert report.matched == ["head.weight", "head.bias"]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="header"):
        read_named_checkpoint(bad)


def test_head_swap_keeps_the_trunk_weights():
    model = source_model()
    trunk = {k: v.clone() for k, v in model.features.state_dict().items()}
    head = replace_head(model, 2)
    model.eval()
    assert head.out_features == 2 and model(torch.rand(3, 1, 28, 28)).shape == (3, 2)
    for name, value in model.features.state_dict().items():
        assert torch.equal(value, trunk[name]), name
