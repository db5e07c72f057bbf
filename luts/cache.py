"""Where appmult-fx caches what it builds (compiled kernels, tabulated C multipliers)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path


def cache_root() -> Path:
    """``$APPMULT_FX_CACHE_DIR``, else ``$XDG_CACHE_HOME/appmult_fx``, else
    ``~/.cache/appmult_fx``: the one cache folder of the package."""
    env = os.environ.get("APPMULT_FX_CACHE_DIR")
    if env:
        return Path(env)
    if os.environ.get("APPMULT_FX_CACHE"):
        warnings.warn(
            "APPMULT_FX_CACHE is no longer read (compiled C multipliers now share the kernels' "
            "cache); set APPMULT_FX_CACHE_DIR instead",
            DeprecationWarning,
            stacklevel=2,
        )
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "appmult_fx"
