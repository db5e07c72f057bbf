"""Shared test fixtures: the read-only ``../shared`` data folder (skipped when absent), the
toolchain of the bench C probes."""

from __future__ import annotations

import shutil
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


@pytest.fixture
def c_probe_toolchain() -> None:
    """Skip unless the CPU runs the AVX-512 kernels (VBMI / VNNI) and a C compiler is on PATH:
    what bench/port_rates.py and bench/grad_bound.py need to build and run their probes."""
    from appmult_fx.ops import kernels

    if kernels.cpu_extension().best_isa() != "avx512":
        pytest.skip("this CPU lacks AVX-512 VBMI / VNNI, which the probes run on")
    if not any(shutil.which(name) for name in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler to build the probe")
