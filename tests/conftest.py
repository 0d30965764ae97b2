"""Shared fixtures: fixed seeds, and the real Omniglot data in ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _fixed_seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny test models run faster and more repeatably on one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests using it skip with a reason where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def omniglot_original(shared_data: Path) -> Path:
    """Folder with the official Omniglot ``images_background_small{1,2}.zip``."""
    path = shared_data / "omniglot-original"
    if not (path / "images_background_small1.zip").is_file():
        pytest.skip(f"real data not available: {path}/images_background_small1.zip is absent")
    return path


@pytest.fixture(scope="session")
def omniglot28(shared_data: Path) -> Path:
    """Folder with the unlabelled 28x28 Omniglot sprite sheets."""
    path = shared_data / "omniglot28"
    if not (path / "images_background.png").is_file():
        pytest.skip(f"real data not available: {path}/images_background.png is absent")
    return path
