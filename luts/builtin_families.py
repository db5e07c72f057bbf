"""Registers the approximate generator families (:mod:`.generators`) as built-in names.

Every approximate built-in carries difference-based gradient LUTs (``edge="column"``, half
window :func:`.gradients.default_window`), so ``gradient="lut"`` works with it. Tables are
cached by the registry (``multiplier(name)`` is memoised).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from . import generators as gen
from .gradients import default_window_for, table_gradients
from .indexing import MAX_BITS, MIN_BITS
from .multiplier import Multiplier
from .registry import register_family

_WIDTHS = range(MIN_BITS, MAX_BITS + 1)
# groups 1-3: widths and sign; the family's parameters follow from group 4
_PREFIX = r"mul([2-8])()([us])_"  # square: mul8u_ (group 2 stays empty)
_RECT_PREFIX = r"mul([2-8])(?:x([2-8]))?([us])_"  # also rectangular: mul8x4u_ (A x B bits)


def _build(m: re.Match[str], family: str, table: np.ndarray, params: dict[str, int]) -> Multiplier:
    bits, signed = _args(m)
    window = default_window_for(bits)
    grad_a, grad_b = table_gradients(table, bits, signed, window, "column", "difference")
    provenance = {
        "source": "builtin",
        "family": family,
        **params,
        "gradient_method": "difference",
        "edge": "column",
        "window": window,
    }
    return Multiplier(m.group(0), bits, signed, table, grad_a, grad_b, provenance)


def _names(family: str) -> Callable[[], list[str]]:
    def names() -> list[str]:
        return [
            f"mul{b}{s}_{suffix}"
            for b in _WIDTHS
            for s in "us"
            for suffix in gen.listed_parameters(family, b, s == "s")
        ]

    return names


def _args(m: re.Match[str]) -> tuple[int | tuple[int, int], bool]:
    """Widths and signedness of a name: ``mul8u_`` -> (8, False), ``mul8x4s_`` -> ((8, 4), True)."""
    a, b, sign = m.group(1), m.group(2), m.group(3)
    return (int(a) if not b or a == b else (int(a), int(b))), sign == "s"


register_family(
    _RECT_PREFIX + r"trunc(\d+)",
    lambda m: _build(
        m, "trunc", gen.truncated_table(*_args(m), int(m.group(4))), {"k": int(m.group(4))}
    ),
    _names("trunc"),
)
register_family(
    _RECT_PREFIX + r"bam(\d+)_(\d+)",
    lambda m: _build(
        m,
        "bam",
        gen.broken_array_table(*_args(m), int(m.group(4)), int(m.group(5))),
        {"h": int(m.group(4)), "v": int(m.group(5))},
    ),
    _names("bam"),
)
register_family(
    _PREFIX + r"optrunc(\d+)",
    lambda m: _build(
        m,
        "optrunc",
        gen.operand_truncation_table(*_args(m), int(m.group(4))),
        {"t": int(m.group(4))},
    ),
    _names("optrunc"),
)
register_family(
    _PREFIX + r"mitchell",
    lambda m: _build(m, "mitchell", gen.mitchell_table(*_args(m)), {}),
    _names("mitchell"),
)
register_family(
    _PREFIX + r"drum(\d+)",
    lambda m: _build(m, "drum", gen.drum_table(*_args(m), int(m.group(4))), {"k": int(m.group(4))}),
    _names("drum"),
)
