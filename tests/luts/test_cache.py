"""The package's one cache folder (compiled kernels and tabulated C multipliers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from appmult_fx.luts.c_source import cache_dir
from appmult_fx.luts.cache import cache_root

from appmult_fx.ops import kernels


def test_one_variable_names_every_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPMULT_FX_CACHE_DIR", str(tmp_path))
    assert cache_root() == tmp_path == kernels.cache_dir()
    assert cache_dir() == tmp_path / "c_multipliers"


def test_the_old_variable_is_reported_not_silently_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APPMULT_FX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("APPMULT_FX_CACHE", str(tmp_path / "old"))
    with pytest.warns(DeprecationWarning, match="set APPMULT_FX_CACHE_DIR instead"):
        assert cache_root() == tmp_path / "xdg" / "appmult_fx"
