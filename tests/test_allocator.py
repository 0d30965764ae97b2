"""tune_cpu_allocator: applies on glibc, refuses bad thresholds, and leaves results unchanged."""

from __future__ import annotations

import platform

import pytest
import torch

from mtl.errors import ConfigError
from mtl.utils.runtime import tune_cpu_allocator


def test_tuning_applies_on_glibc_and_keeps_results():
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    before = (x @ x).sum()
    applied = tune_cpu_allocator()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied is True
    else:
        assert isinstance(applied, bool)
    assert torch.equal((x @ x).sum(), before)


@pytest.mark.parametrize("kwargs", [{"mmap_threshold": -1}, {"trim_threshold": "big"}])
def test_bad_thresholds_are_refused(kwargs):
    with pytest.raises(ConfigError, match="thresholds must be integers"):
        tune_cpu_allocator(**kwargs)
