"""Registers the approximate generator families (:mod:`.generators`) as built-in names.

Every family exists for every operand-width pair: square ``mul8u_trunc4`` and rectangular
``mul8x4u_trunc4`` (A x B bits; see :mod:`.registry` for the naming rule and
:mod:`.generators` for each family's parameters and their valid ranges). Every approximate
built-in carries difference-based gradient LUTs (``edge="column"``, the per-axis default half
windows of :func:`.gradients.default_window_for`: ``grad_a`` smooths along A with A's window,
``grad_b`` along B with B's), so ``gradient="lut"`` works with it. Tables are cached by the
registry (``multiplier(name)`` is memoised).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from . import generators as gen
from .gradients import default_window_for, table_gradients, window_provenance
from .indexing import MAX_BITS, MIN_BITS
from .multiplier import Multiplier
from .registry import INT_PREFIX, name_prefix, name_widths, register_family

_WIDTHS = range(MIN_BITS, MAX_BITS + 1)


def _build(
    name: str,
    bits: int | tuple[int, int],
    signed: bool,
    family: str,
    table: np.ndarray,
    params: dict[str, int],
) -> Multiplier:
    window = default_window_for(bits)
    grad_a, grad_b = table_gradients(table, bits, signed, window, "column", "difference")
    provenance = {
        "source": "builtin",
        "family": family,
        **params,
        "gradient_method": "difference",
        "edge": "column",
        **window_provenance(window, bits),
    }
    return Multiplier(name, bits, signed, table, grad_a, grad_b, provenance)


def _width_names(family: str) -> Callable[[int, int], list[str]]:
    def names(a: int, b: int) -> list[str]:
        return [
            f"{name_prefix(a, b, s == 's')}_{suffix}"
            for s in "us"
            for suffix in gen.listed_parameters(family, (a, b), s == "s")
        ]

    return names


def _register(
    family: str, params: str, table: Callable[..., np.ndarray], keys: tuple[str, ...]
) -> None:
    """Register ``mul<widths><u|s>_<family><params>``; ``keys`` name the regex groups 4..."""

    def factory(m: re.Match[str]) -> Multiplier:
        bits, signed = name_widths(m)
        values = {k: int(m.group(4 + i)) for i, k in enumerate(keys)}
        return _build(
            m.group(0), bits, signed, family, table(bits, signed, *values.values()), values
        )

    width_names = _width_names(family)
    register_family(
        INT_PREFIX + family + params,
        factory,
        lambda: [n for b in _WIDTHS for n in width_names(b, b)],
        width_names,
    )


_register("trunc", r"(\d+)", gen.truncated_table, ("k",))
_register("bam", r"(\d+)_(\d+)", gen.broken_array_table, ("h", "v"))
_register("optrunc", r"(\d+)", gen.operand_truncation_table, ("t",))
_register("mitchell", "", gen.mitchell_table, ())
_register("drum", r"(\d+)", gen.drum_table, ("k",))
