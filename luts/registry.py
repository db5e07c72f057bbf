"""Built-in multipliers by name: ``multiplier("mul8u_exact")``, ``multiplier("mul8x4s_trunc2")``.

Each family registers a name pattern and a factory; names are matched in registration order.
Integer built-ins are named ``mul<widths><u|s>_<family><params>``: ``<widths>`` is one width
``n`` for a square multiplier (``mul8u_``) or ``<a>x<b>`` for a rectangular one with ``a != b``
(``mul8x4u_``: operand A, the rows / activations, has ``a`` bits; operand B, the columns /
weights, ``b`` bits). A square multiplier has exactly one name: ``mul8x8u_...`` is refused
with the name to use instead (``mul8u_...``), so a name always identifies one table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from .indexing import MAX_BITS, MIN_BITS, check_widths, operand_values, widths_label
from .multiplier import Multiplier

Factory = Callable[[re.Match[str]], Multiplier]
WidthNames = Callable[[int, int], list[str]]

#: the widths-and-sign prefix of integer built-in names; groups 1-3: width A, width B (empty
#: for square names), sign; a family's parameters follow from group 4
INT_PREFIX = rf"mul([{MIN_BITS}-{MAX_BITS}])(?:x([{MIN_BITS}-{MAX_BITS}]))?([us])_"
#: every rectangular (bits_a, bits_b) pair with bits_a != bits_b, in listing order
RECTANGULAR_WIDTHS = [
    (a, b)
    for a in range(MAX_BITS, MIN_BITS - 1, -1)
    for b in range(MAX_BITS, MIN_BITS - 1, -1)
    if a != b
]


@dataclass(frozen=True)
class _Family:
    pattern: re.Pattern[str]
    factory: Factory
    names: Callable[[], list[str]]
    width_names: WidthNames | None


_FAMILIES: list[_Family] = []


def register_family(
    pattern: str,
    factory: Factory,
    names: Callable[[], list[str]],
    width_names: WidthNames | None = None,
) -> None:
    """Register a built-in family: a full-match name regex, its factory, its listed names.

    ``names()`` lists the family's square (or non-integer) names; ``width_names(a, b)``, given
    for integer families, lists its names of operand widths ``a x b`` (square when equal)."""
    _FAMILIES.append(_Family(re.compile(pattern), factory, names, width_names))


def name_prefix(bits_a: int, bits_b: int, signed: bool) -> str:
    """``mul8u`` (square), ``mul8x4s`` (rectangular): the start of an integer built-in name."""
    return f"mul{widths_label(bits_a, bits_b)}{'s' if signed else 'u'}"


def name_widths(m: re.Match[str]) -> tuple[int | tuple[int, int], bool]:
    """Widths and signedness of a name matched by :data:`INT_PREFIX`: ``mul8u_`` -> (8, False),
    ``mul8x4s_`` -> ((8, 4), True); a square pair written ``mul8x8u_`` is refused."""
    a, b, sign = m.group(1), m.group(2), m.group(3)
    if b == a:
        canonical = name_prefix(int(a), int(a), sign == "s") + m.group(0)[m.end(3) :]
        raise ValueError(
            f"{m.group(0)!r}: a square multiplier has one width in its name; use {canonical!r}"
        )
    return (int(a) if not b else (int(a), int(b))), sign == "s"


def builtin_names(
    bits: int | tuple[int, int] | None = None, *, rectangular: bool = True
) -> list[str]:
    """Every listed built-in multiplier name, or those of the operand widths ``bits``.

    Without ``bits``: the square integer names family by family, the other (FP) names, then
    (unless ``rectangular=False``) the rectangular ones grouped by widths
    (:data:`RECTANGULAR_WIDTHS` order). ``bits=8`` keeps the square 8-bit names,
    ``bits=(8, 4)`` the 8x4 ones (a pair of equal widths is the square width)."""
    if bits is not None:
        a, b = check_widths(bits)
        return [n for f in _FAMILIES if f.width_names for n in f.width_names(a, b)]
    names = [n for f in _FAMILIES for n in f.names()]
    if rectangular:
        names += [
            n
            for a, b in RECTANGULAR_WIDTHS
            for f in _FAMILIES
            if f.width_names
            for n in f.width_names(a, b)
        ]
    return names


@lru_cache(maxsize=256)
def multiplier(name: str) -> Multiplier:
    """The built-in multiplier called ``name`` (e.g. ``mul8u_exact``, ``mul8x4s_trunc2``)."""
    for family in _FAMILIES:
        m = family.pattern.fullmatch(name)
        if m:
            return family.factory(m)
    raise KeyError(
        f"unknown built-in multiplier {name!r}; known names look like: "
        + ", ".join(builtin_names()[:12])
        + ", mul8x4u_exact, mul8x4s_trunc2 ... (see `appmult-fx lut list [--bits 8x4]`)"
    )


def exact_multiplier(bits: int | tuple[int, int], signed: bool) -> Multiplier:
    """The exact multiplier of ``bits`` (an int, or ``(bits_a, bits_b)``), with the exact
    product's gradients attached (named ``mul8u_exact``, ``mul8x4u_exact``)."""
    bits_a, bits_b = check_widths(bits)
    va, vb = operand_values(bits_a, signed), operand_values(bits_b, signed)
    table = va[:, None] * vb[None, :]
    grad_a = vb[None, :].expand(len(va), len(vb)).float()  # d(a*b)/da = b
    grad_b = va[:, None].expand(len(va), len(vb)).float()  # d(a*b)/db = a
    name = name_prefix(bits_a, bits_b, signed) + "_exact"
    bits = bits_a if bits_a == bits_b else (bits_a, bits_b)
    return Multiplier(
        name, bits, signed, table, grad_a, grad_b, {"source": "builtin", "family": "exact"}
    )


register_family(
    INT_PREFIX + "exact",
    lambda m: exact_multiplier(*name_widths(m)),
    lambda: [f"mul{b}{s}_exact" for b in range(MIN_BITS, MAX_BITS + 1) for s in "us"],
    lambda a, b: [name_prefix(a, b, s == "s") + "_exact" for s in "us"],
)
