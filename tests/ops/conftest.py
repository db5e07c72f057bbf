"""Fixtures of the op tests: which implementation the ``appmult`` ops run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appmult_fx.ops.dispatch import use_reference


@pytest.fixture
def reference_only() -> Iterator[None]:
    """Every op runs its pure-PyTorch reference during the test."""
    previous = use_reference(True)
    yield
    use_reference(previous)


@pytest.fixture
def kernels_active() -> Iterator[None]:
    """The compiled kernels are registered for CPU and CUDA during the test."""
    previous = use_reference(False)
    yield
    use_reference(previous)
