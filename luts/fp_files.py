"""FP mantissa-table files: ApproxTrain's raw ``NAME_<m>.bin`` and the project's ``.npz``.

``.bin`` (ApproxTrain): no header, ``2**(2m)`` bytes, entry ``(i << m) | j`` (a outer) holds
``carry << 7 | mantissa`` (bits m..6 zero); only m <= 7 fits a byte. ``.npz`` (own format, any
m): arrays ``mantissa_table`` (int32) and ``meta`` (a JSON string: format, name,
mantissa_bits, rounding, provenance).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .format_errors import clip
from .fp_format import check_mantissa_bits

if TYPE_CHECKING:
    from .fp import FPMultiplier

NPZ_FORMAT = "appmult-fx-fp-lut/1"
_BIN_NAME = re.compile(r".*_(\d+)\.bin")


def _m_from_size(path: Path, size: int) -> int:
    for m in range(1, 8):
        if size == 1 << (2 * m):
            return m
    raise ValueError(f"{path}: {size} bytes is not 4**m for m in 1..7 (an ApproxTrain .bin table)")


def read_bin(path: Path, m: int | None = None) -> tuple[torch.Tensor, int]:
    """The int32 mantissa table and m of an ApproxTrain ``.bin`` file."""
    data = path.read_bytes()
    size_m = _m_from_size(path, len(data))
    named = _BIN_NAME.fullmatch(path.name)
    for what, value in (
        ("given m", m),
        ("file name suffix", int(named.group(1)) if named else None),
    ):
        if value is not None and value != size_m:
            raise ValueError(
                f"{path}: {what} says m = {value} but {len(data)} bytes mean m = {size_m}"
            )
    m = size_m
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int32)
    stray = raw & (0x7F & ~((1 << m) - 1))
    if bool(stray.any()):
        off = int(stray.nonzero()[0, 0])
        raise ValueError(
            f"{path}: byte at offset {off} is 0x{int(raw[off]):02x}; expected carry in bit 7 and "
            f"a {m}-bit mantissa in bits 0..{m - 1} (bits {m}..6 zero)"
        )
    table = ((raw >> 7) << m) | (raw & ((1 << m) - 1))
    return table.reshape(1 << m, 1 << m), m


def bin_bytes(table: torch.Tensor, m: int) -> bytes:
    """ApproxTrain ``.bin`` bytes of an int32 mantissa table (m <= 7)."""
    if not 1 <= m <= 7:
        raise ValueError(f"ApproxTrain .bin files hold m <= 7 (one byte per entry), got m = {m}")
    t = table.to(torch.int32)
    byte = ((t >> m) << 7) | (t & ((1 << m) - 1))
    return byte.to(torch.uint8).reshape(-1).numpy().tobytes()


def save_fp(mult: FPMultiplier, path: str | Path) -> Path:
    """Write ``mult`` as ``.bin`` (ApproxTrain, m <= 7) or ``.npz`` (own format) by suffix."""
    path = Path(path)
    m = mult.mantissa_bits
    if path.suffix == ".bin":
        named = _BIN_NAME.fullmatch(path.name)
        if named and int(named.group(1)) != m:
            raise ValueError(
                f"{path}: the name says m = {named.group(1)} but the multiplier has m = {m}"
            )
        path.write_bytes(bin_bytes(mult.mantissa_table, m))
    elif path.suffix == ".npz":
        meta = {
            "format": NPZ_FORMAT,
            "name": mult.name,
            "mantissa_bits": m,
            "rounding": mult.rounding,
            "provenance": mult.provenance,
        }
        with path.open("wb") as fh:
            np.savez(
                fh, mantissa_table=mult.mantissa_table.numpy(), meta=np.array(json.dumps(meta))
            )
    else:
        raise ValueError(f"{path}: expected a file name ending in .bin or .npz")
    return path


def read_npz(path: Path) -> dict[str, Any]:
    """Constructor arguments of an :class:`FPMultiplier` stored in the own ``.npz`` format."""
    with np.load(path, allow_pickle=False) as z:
        if set(z.files) != {"mantissa_table", "meta"}:
            raise ValueError(
                f"{path}: expected arrays mantissa_table and meta, got {sorted(z.files)}"
            )
        meta = json.loads(str(z["meta"]))
        table = torch.from_numpy(z["mantissa_table"].copy())
    if meta.get("format") != NPZ_FORMAT:
        got = clip(meta.get("format"))
        raise ValueError(f"{path}: expected format {NPZ_FORMAT!r}, got {got}")
    return {
        "name": meta["name"],
        "mantissa_bits": check_mantissa_bits(meta["mantissa_bits"]),
        "mantissa_table": table,
        "rounding": meta["rounding"],
        "provenance": meta["provenance"],
    }
