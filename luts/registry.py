"""Built-in multipliers by name: ``multiplier("mul8u_exact")``.

Each family registers a name pattern and a factory; names are matched in registration order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from .indexing import operand_values
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


def exact_multiplier(bits: int, signed: bool) -> Multiplier:
    """The exact ``bits``-bit multiplier, with the exact product's gradients attached."""
    v = operand_values(bits, signed)
    table = v[:, None] * v[None, :]
    grad_a = v[None, :].expand(len(v), len(v)).float()  # d(a*b)/da = b
    grad_b = v[:, None].expand(len(v), len(v)).float()  # d(a*b)/db = a
    name = f"mul{bits}{'s' if signed else 'u'}_exact"
    return Multiplier(
        name, bits, signed, table, grad_a, grad_b, {"source": "builtin", "family": "exact"}
    )


register_family(
    r"mul([2-8])([us])_exact",
    lambda m: exact_multiplier(int(m.group(1)), m.group(2) == "s"),
    lambda: [f"mul{b}{s}_exact" for b in range(2, 9) for s in "us"],
)
