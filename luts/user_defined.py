"""Multipliers from a user's netlist, Python function or C/C++ source file.

C/C++ sources are compiled and tabulated by :mod:`.c_source` (``from_c_source`` is
re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .c_source import cache_dir, from_c_source
from .indexing import check_widths, operand_values
from .multiplier import Multiplier
from .netlist_import import from_netlist

__all__ = ["cache_dir", "from_c_source", "from_function", "from_netlist"]


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
