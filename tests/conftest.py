"""Shared test fixtures: the read-only ``../shared`` data folder (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    """``../shared`` beside the repository; tests using it skip in a fresh clone."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (fresh clone): data-driven check skipped")
    return SHARED


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread: fast and steady on small shared machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
