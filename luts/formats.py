"""LUT files: the project's own format, and format detection for reading and writing.

Own format (``.lut`` by convention, any suffix works): a NumPy ``.npz`` archive (readable with
``numpy.load``) holding

* ``header``: UTF-8 JSON as a ``uint8`` array - ``format`` (``"appmult-fx-lut"``),
  ``version``, ``kind``, ``name``, ``bits`` (operand A's width, kept for older readers),
  ``bits_a``, ``bits_b`` (optional, default ``bits``: rectangular multipliers), ``signed``,
  ``has_gradients``, ``window``, ``provenance``, ``sha256`` (:attr:`Multiplier.sha256`,
  verified on load) and, optional, ``hardware`` (:attr:`Multiplier.hardware`: power, area,
  delay figures);
* ``table``: ``int32 [2**bits_a, 2**bits_b]``, indexed per :mod:`.indexing`;
* ``grad_a``, ``grad_b``: ``float32`` tables, present only with gradients.

The own-format writer lives in :mod:`.lut_file_writer` (re-exported here), so that
``Multiplier.save`` needs no import of the readers. Other formats read: the seed tools' text
files (:mod:`.text_lut_format`) and TFApprox raw tables (:mod:`.tfapprox_format`).
Malformed files raise :class:`LutFormatError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .format_errors import LutFormatError, clip
from .lut_file_writer import OWN_FORMAT, OWN_VERSION, write_lut_file
from .multiplier import Multiplier
from .text_lut_format import read_seed_text, write_seed_text
from .tfapprox_format import RAW_SIZE, read_tfapprox, write_tfapprox

__all__ = [
    "FORMATS",
    "OWN_FORMAT",
    "OWN_VERSION",
    "LutFormatError",
    "load_multiplier",
    "save_multiplier",
    "write_lut_file",
]

FORMATS = ("appmult-fx", "seed-text", "tfapprox")
_ZIP_MAGIC = b"PK\x03\x04"
_HEADER_TYPES: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "version": int,
    "kind": str,
    "name": str,
    "bits": int,
    "signed": bool,
    "has_gradients": bool,
    "window": (int, type(None)),
    "provenance": dict,
    "sha256": str,
}


def detect_format(path: Path, head: bytes, size: int) -> str:
    """The format of a LUT file from its first bytes and size."""
    if head.startswith(_ZIP_MAGIC):
        return "appmult-fx"
    if path.suffix == ".txt":
        return "seed-text"
    printable = sum(32 <= c < 127 or c in b"\t\r\n" for c in head)
    if head and b"\0" not in head and printable >= 0.95 * len(head):
        return "seed-text"  # mostly text: the text reader names any bad byte and its line
    if size == RAW_SIZE:
        return "tfapprox"
    raise LutFormatError(
        path,
        "unrecognised LUT file: expected an appmult-fx archive (.npz/zip), a seed text LUT, or "
        f"a TFApprox raw table of {RAW_SIZE} bytes; got {size} bytes of binary data",
    )


# ApproxTrain NAME_<m>.bin mantissa tables: 2**(2m) bytes, m = 1..7
_APPROXTRAIN_SIZES = {4**m for m in range(1, 8)}


def load_multiplier(path: str | Path, format: str | None = None) -> Any:
    """Read a multiplier from a LUT file; ``format`` (one of :data:`FORMATS`) or detected.

    ApproxTrain ``.bin`` mantissa tables and FP archives give an ``FPMultiplier``.
    """
    path = Path(path)
    if format is None and path.suffix == ".bin" and path.stat().st_size in _APPROXTRAIN_SIZES:
        from .fp import load_bin

        return load_bin(path)
    data = path.read_bytes()
    fmt = format or detect_format(path, data[:4096], len(data))
    if fmt == "appmult-fx":
        return _read_own(path)
    if fmt == "seed-text":
        return read_seed_text(path, data)
    if fmt == "tfapprox":
        return read_tfapprox(path, data)
    raise ValueError(f"unknown LUT format {fmt!r}; expected one of {FORMATS}")


def save_multiplier(mult: Multiplier, path: str | Path, format: str | None = None) -> Path:
    """Write ``mult``: own format by default, seed text for a ``.txt`` path or on request."""
    path = Path(path)
    fmt = format or ("seed-text" if path.suffix == ".txt" else "appmult-fx")
    if mult.kind != "int":
        raise ValueError(f"{mult.name} is a {mult.kind} multiplier; these formats hold int LUTs")
    if fmt == "appmult-fx":
        return write_lut_file(mult, path)
    if fmt == "seed-text":
        return write_seed_text(mult, path)
    if fmt == "tfapprox":
        return write_tfapprox(mult, path)
    raise ValueError(f"unknown LUT format {fmt!r}; expected one of {FORMATS}")


def _read_members(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except Exception as exc:  # zipfile/zlib/npy header errors come in many types
        raise LutFormatError(
            path, f"corrupt appmult-fx LUT archive ({type(exc).__name__}: {exc})"
        ) from exc


def _parse_header(path: Path, raw: np.ndarray) -> dict[str, Any]:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise LutFormatError(path, f"header must be a 1-D uint8 array, got {raw.dtype} {raw.shape}")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LutFormatError(path, f"header is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise LutFormatError(path, f"header must be a JSON object, got {type(header).__name__}")
    for key, kind in _HEADER_TYPES.items():
        value = header.get(key)
        if (
            key not in header
            or not isinstance(value, kind)
            or (kind is int and isinstance(value, bool))
        ):
            raise LutFormatError(
                path, f"header field {key!r} missing or of the wrong type: {clip(value)}"
            )
    if header["format"] != OWN_FORMAT or header["version"] != OWN_VERSION:
        raise LutFormatError(
            path,
            f"expected format {OWN_FORMAT!r} version {OWN_VERSION}, "
            f"got {clip(header['format'])} version {header['version']}",
        )
    if header["kind"] != "int":
        raise LutFormatError(path, f"expected kind 'int', got {clip(header['kind'])}")
    for key in ("bits_a", "bits_b"):
        value = header.setdefault(key, header["bits"])
        if not isinstance(value, int) or isinstance(value, bool):
            raise LutFormatError(
                path, f"header field {key!r} must be an integer, got {clip(value)}"
            )
    if header["bits"] != header["bits_a"]:
        raise LutFormatError(
            path, f"header says bits={header['bits']} but bits_a={header['bits_a']}"
        )
    return header


def _array(path: Path, members: dict[str, np.ndarray], key: str, dtype: str) -> torch.Tensor:
    arr = members[key]
    if arr.dtype != np.dtype(dtype):
        raise LutFormatError(path, f"{key} must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _read_own(path: Path) -> Any:
    members = _read_members(path)
    if "mantissa_table" in members and "table" not in members:
        from .fp import FPMultiplier, fp_files

        return FPMultiplier(**fp_files.read_npz(path))
    if "header" not in members or "table" not in members:
        raise LutFormatError(path, f"archive lacks 'header' or 'table' (has {sorted(members)})")
    header = _parse_header(path, members["header"])
    expected = {"header", "table"} | ({"grad_a", "grad_b"} if header["has_gradients"] else set())
    if set(members) != expected:
        raise LutFormatError(
            path, f"archive members {sorted(members)}, expected {sorted(expected)}"
        )
    grads = {
        k: _array(path, members, k, "<f4") if header["has_gradients"] else None
        for k in ("grad_a", "grad_b")
    }
    try:
        mult = Multiplier(
            header["name"],
            (header["bits_a"], header["bits_b"]),
            header["signed"],
            _array(path, members, "table", "<i4"),
            grads["grad_a"],
            grads["grad_b"],
            header["provenance"],
            header.get("hardware"),
        )
    except ValueError as exc:
        raise LutFormatError(path, str(exc)) from exc
    if mult.sha256 != header["sha256"]:
        raise LutFormatError(
            path,
            f"sha256 mismatch: header says {header['sha256']}, content hashes to {mult.sha256}",
        )
    return mult
