"""TFApprox-style raw LUTs: 65,536 little-endian ``uint16`` products of an 8x8 unsigned multiplier.

Entry ``a * 256 + b`` (first operand outer) holds the product of ``a`` and ``b``; no header.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .format_errors import LutFormatError
from .multiplier import Multiplier

RAW_BITS = 8
RAW_ENTRIES = 1 << (2 * RAW_BITS)
RAW_SIZE = 2 * RAW_ENTRIES  # bytes


def read_tfapprox(path: str | Path, data: bytes | None = None) -> Multiplier:
    """Read a TFApprox raw table (8-bit unsigned, 65,536 x uint16 little-endian, a outer)."""
    path = Path(path)
    data = path.read_bytes() if data is None else data
    if len(data) != RAW_SIZE:
        raise LutFormatError(
            path, f"a TFApprox raw LUT has {RAW_SIZE} bytes (65,536 x uint16), got {len(data)}"
        )
    table = np.frombuffer(data, dtype="<u2").astype(np.int32).reshape(1 << RAW_BITS, -1)
    provenance = {"source": "file", "path": str(path), "format": "tfapprox"}
    return Multiplier(path.stem, RAW_BITS, False, torch.from_numpy(table), provenance=provenance)


def write_tfapprox(mult: Multiplier, path: str | Path) -> Path:
    """Write an 8-bit unsigned multiplier as a TFApprox raw table."""
    if mult.bits != RAW_BITS or mult.signed:
        raise ValueError(
            f"the TFApprox raw format holds 8x8-bit unsigned multipliers only, got {mult.name} "
            f"({mult.bits_a}x{mult.bits_b}-bit {'signed' if mult.signed else 'unsigned'}); "
            "save it in the appmult-fx format (.lut) or as seed text instead"
        )
    table = mult.table.numpy()
    if table.min() < 0 or table.max() > 0xFFFF:
        raise ValueError(f"{mult.name}: values must fit uint16 for the TFApprox format")
    path = Path(path)
    path.write_bytes(table.astype("<u2").tobytes())
    return path
