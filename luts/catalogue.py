"""Multiplier catalogues: a folder of ``.lut`` files described by one ``catalogue.json``.

``catalogue.json`` (written by :func:`.library.import_library`)::

    {"format": "appmult-fx-catalogue", "version": 1,
     "multipliers": [{"name", "bits_a", "bits_b", "signed",
                      "file" (the .lut, relative to the catalogue's folder),
                      "sha256" (Multiplier.sha256 of that file),
                      "metrics" (metrics.metrics: er med nmed mred mse wce wcre bias),
                      "hardware" (power_mw, area_um2, delay_ns, source...) or null,
                      "sources" (the library files it was built from, relative)}]}

:func:`load_catalogue` gives the multipliers in catalogue order, each file verified against
the recorded sha256.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .format_errors import LutFormatError
from .formats import load_multiplier
from .multiplier import Multiplier

CATALOGUE_FORMAT = "appmult-fx-catalogue"
CATALOGUE_VERSION = 1
CATALOGUE_FILE = "catalogue.json"
_ENTRY_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "bits_a": int,
    "bits_b": int,
    "signed": bool,
    "file": str,
    "sha256": str,
    "metrics": dict,
    "hardware": (dict, type(None)),
    "sources": list,
}


def catalogue_path(path: str | Path) -> Path:
    """The ``catalogue.json`` of ``path`` (the file itself, or a folder holding it)."""
    path = Path(path)
    return path / CATALOGUE_FILE if path.is_dir() else path


def catalogue_entry(
    mult: Multiplier, file: str, metrics: dict[str, float], sources: list[str]
) -> dict[str, Any]:
    """One ``multipliers`` entry of a catalogue for ``mult`` saved as ``file``."""
    return {
        "name": mult.name,
        "bits_a": mult.bits_a,
        "bits_b": mult.bits_b,
        "signed": mult.signed,
        "file": file,
        "sha256": mult.sha256,
        "metrics": metrics,
        "hardware": mult.hardware,
        "sources": sources,
    }


def write_catalogue(entries: list[dict[str, Any]], path: str | Path) -> Path:
    """Write ``catalogue.json`` atomically (temp file + ``os.replace``)."""
    path = Path(path)
    text = json.dumps(
        {"format": CATALOGUE_FORMAT, "version": CATALOGUE_VERSION, "multipliers": entries},
        indent=1,
        sort_keys=True,
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".catalogue-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)
    return path


def read_catalogue(path: str | Path) -> list[dict[str, Any]]:
    """The checked entries of a catalogue (a ``catalogue.json`` or the folder holding one)."""
    path = catalogue_path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LutFormatError(path, f"not a readable catalogue ({exc})") from exc
    if (
        not isinstance(data, dict)
        or data.get("format") != CATALOGUE_FORMAT
        or data.get("version") != CATALOGUE_VERSION
        or not isinstance(data.get("multipliers"), list)
    ):
        raise LutFormatError(
            path, f"expected format {CATALOGUE_FORMAT!r} version {CATALOGUE_VERSION}"
        )
    for k, entry in enumerate(data["multipliers"]):
        for key, kind in _ENTRY_TYPES.items():
            value = entry.get(key) if isinstance(entry, dict) else None
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise LutFormatError(path, f"multipliers[{k}].{key} missing or of the wrong type")
    return data["multipliers"]


def load_catalogue(path: str | Path) -> list[Multiplier]:
    """The catalogue's multipliers in its order; each file must hash to its recorded sha256."""
    path = catalogue_path(path)
    out = []
    for entry in read_catalogue(path):
        file = path.parent / entry["file"]
        if path.parent.resolve() not in file.resolve().parents:
            raise LutFormatError(path, f"{entry['file']!r} lies outside the catalogue's folder")
        mult = load_multiplier(file)
        if mult.sha256 != entry["sha256"]:
            raise LutFormatError(
                file,
                f"sha256 {mult.sha256} differs from the catalogue's {entry['sha256']} "
                f"for {entry['name']!r}: the file was changed or replaced",
            )
        if entry["hardware"] is not None and mult.hardware != entry["hardware"]:
            mult = mult.with_hardware(**entry["hardware"])
        out.append(mult)
    return out
