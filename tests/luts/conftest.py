"""Fixtures of the LUT-library tests: the shared seed LUT files, each loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest
from appmult_fx.luts.formats import load_multiplier
from appmult_fx.luts.multiplier import Multiplier


@pytest.fixture(scope="session")
def seed_luts(shared: Path) -> dict[Path, Multiplier]:
    """Every ``*_lutfp*.txt`` under ``../shared/appmults``, loaded by our reader."""
    files = sorted((shared / "appmults").rglob("*_lutfp*.txt"))
    assert len(files) == 20, files
    return {path: load_multiplier(path) for path in files}
