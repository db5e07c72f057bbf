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


@pytest.fixture
def extension_calls(kernels_active, monkeypatch) -> list[str]:
    """The names of the compiled CPU module's functions the test calls from now on (the module
    itself still runs them), with the compiled kernels active."""
    from appmult_fx.ops import kernels

    ext, calls = kernels.cpu_extension(), []

    class Spy:
        def __getattr__(self, name: str):  # noqa: ANN204
            calls.append(name)
            return getattr(ext, name)

    monkeypatch.setattr(kernels, "cpu_extension", lambda: Spy())
    return calls
