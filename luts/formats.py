"""LUT file formats: reading and writing multipliers (filled in by the LUT-library work)."""

from __future__ import annotations

from pathlib import Path

from .multiplier import Multiplier


def load_multiplier(path: str | Path) -> Multiplier:
    """Read a multiplier from a LUT file (format detected from name and content)."""
    raise NotImplementedError("LUT file formats are being implemented")


def save_multiplier(mult: Multiplier, path: str | Path) -> Path:
    """Write ``mult`` in the project's own LUT format."""
    raise NotImplementedError("LUT file formats are being implemented")
