"""Multipliers from a user's netlist, Python function or C/C++ source file.

C/C++ sources are compiled and tabulated by :mod:`.c_source` (``from_c_source`` is
re-exported here).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .blif import parse_blif
from .c_source import cache_dir, from_c_source
from .indexing import check_widths, operand_values
from .multiplier import Multiplier
from .netlist import Netlist, simulate_multiplier

__all__ = ["cache_dir", "from_c_source", "from_function", "from_netlist"]

_SUFFIX = re.compile(r"_sop$")


def _from_codes(codes: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Output codes (unsigned 2n-bit) as product values (two's complement when signed)."""
    if not signed:
        return codes
    half = 1 << (2 * bits - 1)
    return np.where(codes >= half, codes - 2 * half, codes)


def from_netlist(
    path: str | Path, signed: bool = False, name: str | None = None, top: str | None = None
) -> Multiplier:
    """Simulate a gate-level multiplier (BLIF, or structural Verilog ``.v``) over all inputs.

    Inputs: the first half of the top model's inputs is operand A, the second half B, LSB
    first; outputs LSB first (two's complement when ``signed``). The default name is the
    file stem without a ``_sop`` suffix.
    """
    path = Path(path)
    netlist: Netlist
    if path.suffix in (".v", ".sv"):
        from .verilog import parse_verilog

        netlist = parse_verilog(path, top)
        fmt = "verilog"
    else:
        netlist = parse_blif(path, top)
        fmt = "blif"
    codes = simulate_multiplier(netlist)
    bits = codes.shape[0].bit_length() - 1
    provenance = {"source": "netlist", "path": str(path), "format": fmt, "top": netlist.top}
    table = _from_codes(codes, bits, signed)
    return Multiplier(
        name or _SUFFIX.sub("", path.stem), bits, signed, table, provenance=provenance
    )


def _check_integral(values: np.ndarray, a: np.ndarray, b: np.ndarray, what: str) -> np.ndarray:
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    if values.dtype.kind != "f":
        raise TypeError(f"{what} must return integers, got dtype {values.dtype}")
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        i = np.flatnonzero(bad.reshape(-1))[0]
        raise ValueError(
            f"{what} must return integers; f({int(a.reshape(-1)[i])}, {int(b.reshape(-1)[i])}) "
            f"= {float(values.reshape(-1)[i])!r}"
        )
    return values.astype(np.int64)


def from_function(
    f: Callable[[Any, Any], Any],
    bits: int | tuple[int, int],
    signed: bool = False,
    name: str | None = None,
) -> Multiplier:
    """Tabulate ``table[a][b] = f(a, b)`` over all operand values (``bits``: int or
    ``(bits_a, bits_b)``).

    ``f`` is first called once with two broadcast int64 arrays (all pairs); if that raises or
    does not give one value per pair, it is called per pair with Python ints. The way used is
    recorded in ``provenance["evaluation"]``.
    """
    bits_a, bits_b = check_widths(bits)
    va = operand_values(bits_a, signed).numpy().astype(np.int64)
    vb = operand_values(bits_b, signed).numpy().astype(np.int64)
    a, b = np.meshgrid(va, vb, indexing="ij")
    label = name or getattr(f, "__name__", "function")
    try:
        out = np.asarray(f(a, b))
        evaluation = "vectorized" if out.shape == a.shape else None
    except Exception:  # scalar-only code (if/int()/math.*) fails on arrays: go per pair
        evaluation = None
    if evaluation is None:
        evaluation = "elementwise"
        out = np.array([[f(int(x), int(y)) for y in vb] for x in va])
    table = _check_integral(out, a, b, f"function {label!r}")
    if label == "<lambda>":
        label = "lambda"
    provenance = {"source": "function", "function": repr(f), "evaluation": evaluation}
    return Multiplier(label, (bits_a, bits_b), signed, table, provenance=provenance)
