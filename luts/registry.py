"""Built-in multipliers by name: ``multiplier("mul8u_exact")``.

Each family registers a name pattern and a factory; names are matched in registration order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from .indexing import check_widths, operand_values
from .multiplier import Multiplier

Factory = Callable[[re.Match[str]], Multiplier]
_FAMILIES: list[tuple[re.Pattern[str], Factory, Callable[[], list[str]]]] = []


def register_family(pattern: str, factory: Factory, names: Callable[[], list[str]]) -> None:
    """Register a built-in family: a full-match name regex, its factory, its listed names."""
    _FAMILIES.append((re.compile(pattern), factory, names))


def builtin_names() -> list[str]:
    """Every listed built-in multiplier name."""
    return [n for _, _, names in _FAMILIES for n in names()]


@lru_cache(maxsize=256)
def multiplier(name: str) -> Multiplier:
    """The built-in multiplier called ``name`` (e.g. ``mul8u_exact``, ``mul7s_exact``)."""
    for pattern, factory, _ in _FAMILIES:
        m = pattern.fullmatch(name)
        if m:
            return factory(m)
    raise KeyError(
        f"unknown built-in multiplier {name!r}; known names look like: "
        + ", ".join(builtin_names()[:12])
        + " ... (see `appmult-fx lut list`)"
    )


def exact_multiplier(bits: int | tuple[int, int], signed: bool) -> Multiplier:
    """The exact multiplier of ``bits`` (an int, or ``(bits_a, bits_b)``), with the exact
    product's gradients attached (named ``mul8u_exact``, ``mul8x4u_exact``)."""
    bits_a, bits_b = check_widths(bits)
    va, vb = operand_values(bits_a, signed), operand_values(bits_b, signed)
    table = va[:, None] * vb[None, :]
    grad_a = vb[None, :].expand(len(va), len(vb)).float()  # d(a*b)/da = b
    grad_b = va[:, None].expand(len(va), len(vb)).float()  # d(a*b)/db = a
    widths = f"{bits_a}" if bits_a == bits_b else f"{bits_a}x{bits_b}"
    name = f"mul{widths}{'s' if signed else 'u'}_exact"
    bits = bits_a if bits_a == bits_b else (bits_a, bits_b)
    return Multiplier(
        name, bits, signed, table, grad_a, grad_b, {"source": "builtin", "family": "exact"}
    )


register_family(
    r"mul([2-8])([us])_exact",
    lambda m: exact_multiplier(int(m.group(1)), m.group(2) == "s"),
    lambda: [f"mul{b}{s}_exact" for b in range(2, 9) for s in "us"],
)
register_family(  # rectangular exact multipliers, not listed: mul8x4u_exact, mul6x3s_exact...
    r"mul([2-8])x([2-8])([us])_exact",
    lambda m: exact_multiplier((int(m.group(1)), int(m.group(2))), m.group(3) == "s"),
    lambda: [],
)
