"""The header comment block of EvoApproxLib files (C models and Verilog netlists alike).

Every file of the library starts with lines such as::

    // MAE% = 0.027 %
    // MAE = 4.5
    // WCE% = 0.092 %
    // WCE = 15
    // WCRE% = 100.00 %
    // EP% = 79.54 %
    // MRE% = 0.76 %
    // MSE = 34
    // PDK45_PWR = 0.254 mW
    // PDK45_AREA = 473.5 um2
    // PDK45_DELAY = 1.28 ns

The older EvoApprox8b files (``mul8_000.v``) write ``// Power  (45) = 0.428700`` (mW),
``// Area   (45) = 662.000000`` (um2), ``// Delay  (45) = 1.190000`` (ns), ``// MAE =``,
``// MSE =``, ``// WCE =`` and ``// MRE = 1.990000 %``, ``// EP = 86.500000 %``,
``// WCRE = 560.000000 %``. Their percentages are rounded to one or two decimals, then
printed with six, and their MRE averages over every pair (zero products included), so those
three are kept (``provenance["header_unchecked"]``) but never compared.

:func:`parse_evoapprox_header` turns them into hardware figures (the keys of
:data:`.multiplier.HARDWARE_KEYS`) and the library's error figures (keys of
:data:`HEADER_METRICS`), with the rounding of every printed figure so that computed metrics
can be compared "within the header's rounding" (:func:`header_tolerance`);
:func:`check_header` refuses a multiplier whose table contradicts its header.
"""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

from .metrics import evoapprox_metrics, metrics
from .multiplier import Multiplier

# Header name -> metrics key (all error figures of the library, in its own units).
HEADER_METRICS: dict[str, str] = {
    "MAE%": "mae_pct",
    "MAE": "mae",
    "WCE%": "wce_pct",
    "WCE": "wce",
    "WCRE%": "wcre_pct",
    "EP%": "ep_pct",
    "MRE%": "mre_pct",
    "MSE": "mse",
}

# EvoApprox8b's percentages (``MRE = 1.99 %``): kept, not compared (module docstring).
LEGACY_PERCENTAGES: dict[str, str] = {"MRE": "mre_pct", "EP": "ep_pct", "WCRE": "wcre_pct"}

# Hardware figure -> (hardware key, {unit: factor to the key's unit}); the first unit is the
# one EvoApprox8b's unitless ``Power (45) = ...`` lines mean.
_HARDWARE: dict[str, tuple[str, dict[str, float]]] = {
    "PWR": ("power_mw", {"mw": 1.0, "uw": 1e-3, "w": 1e3, "nw": 1e-6}),
    "AREA": ("area_um2", {"um2": 1.0, "um^2": 1.0, "mm2": 1e6, "nm2": 1e-6}),
    "DELAY": ("delay_ns", {"ns": 1.0, "ps": 1e-3, "us": 1e3}),
}
_LEGACY_HARDWARE = {"POWER": "PWR", "AREA": "AREA", "DELAY": "DELAY"}

_LINE = re.compile(
    r"^\s*(?://|\*)\s*(?P<key>[A-Za-z][A-Za-z0-9_]*%?)\s*(?:\((?P<tech>[A-Za-z0-9]+)\))?"
    r"\s*=\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>\S*)\s*$"
)
_HW_KEY = re.compile(r"^(?P<tech>[A-Za-z0-9]+)_(?P<what>PWR|AREA|DELAY)$")


class HeaderMismatch(ValueError):
    """A multiplier's computed error figures contradict its EvoApproxLib header."""


HEADER_LINES = 60  # the block sits at the top of the file; never scan a whole netlist


def _half_ulp(text: str) -> float:
    """Half a unit in the last printed digit of ``text`` (``"0.027"`` -> 0.0005)."""
    exponent = Decimal(text).as_tuple().exponent
    return 0.5 * 10.0 ** int(exponent) if isinstance(exponent, int) else 0.0


def parse_evoapprox_header(text: str) -> dict[str, Any]:
    """Hardware and error figures of an EvoApproxLib file's header comment block.

    Returns ``{"hardware": {...} or None, "metrics": {...}, "rounding": {...},
    "unchecked": {...}}``: hardware has ``power_mw``, ``area_um2``, ``delay_ns`` (converted
    from the printed unit; EvoApprox8b's unitless ``Power (45)`` lines in mW, um2, ns) and
    ``source`` (e.g. ``"EvoApproxLib header (PDK45)"``); metrics has the keys of
    :data:`HEADER_METRICS` that are present (percentages stay percentages); ``rounding`` maps
    every metrics key to half a unit of its last printed digit; ``unchecked`` holds
    EvoApprox8b's percentages (:data:`LEGACY_PERCENTAGES`), which are not comparable. Only
    the first :data:`HEADER_LINES` lines are read. Lines that are not ``KEY [(tech)] = number
    [unit]`` are ignored; an unknown unit on a hardware figure raises ValueError naming the
    line.
    """
    hardware: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    rounding: dict[str, float] = {}
    unchecked: dict[str, float] = {}
    techs: set[str] = set()
    for lineno, line in enumerate(text.splitlines()[:HEADER_LINES], 1):
        m = _LINE.match(line)
        if m is None:
            continue
        key, value, unit = m["key"].upper(), m["value"], m["unit"]
        try:
            number = float(Decimal(value))
        except InvalidOperation:  # pragma: no cover - the regex only lets numbers through
            continue
        if key in LEGACY_PERCENTAGES and unit == "%":
            unchecked[LEGACY_PERCENTAGES[key]] = number
            continue
        if key in HEADER_METRICS and m["tech"] is None:
            metrics[HEADER_METRICS[key]] = number
            rounding[HEADER_METRICS[key]] = _half_ulp(value)
            continue
        hw = _HW_KEY.match(key)
        if hw is not None:
            tech, what = hw["tech"], hw["what"]
        elif key in _LEGACY_HARDWARE and m["tech"] is not None:
            tech, what = f"{m['tech']} nm", _LEGACY_HARDWARE[key]
        else:
            continue
        target, units = _HARDWARE[what]
        factor = 1.0 if hw is None and not unit else units.get(unit.lower())
        if factor is None:
            raise ValueError(
                f"header line {lineno}: unknown unit {unit!r} for {key} "
                f"(expected one of {sorted(units)}): {line.strip()[:120]!r}"
            )
        hardware[target] = number * factor
        techs.add(tech)
    if hardware:
        hardware["source"] = f"EvoApproxLib header ({', '.join(sorted(techs))})"
    return {
        "hardware": hardware or None,
        "metrics": metrics,
        "rounding": rounding,
        "unchecked": unchecked,
    }


def header_tolerance(value: float, half_ulp: float) -> float:
    """Absolute tolerance for comparing a computed figure with a rounded header figure.

    Half a unit of the last printed digit, plus a relative 1e-9 for float noise.
    """
    return half_ulp + 1e-9 * abs(value)


def with_header(mult: Multiplier, text: str) -> Multiplier:
    """``mult`` annotated from the header of its source ``text`` (unchanged if it has none).

    Hardware figures are merged into :attr:`Multiplier.hardware` (figures already set win);
    the library's error figures go to ``provenance["header_metrics"]`` and their rounding to
    ``provenance["header_rounding"]`` (compare with :func:`check_header`), EvoApprox8b's
    percentages to ``provenance["header_unchecked"]``.
    """
    header = parse_evoapprox_header(text)
    if header["hardware"] is None and not header["metrics"] and not header["unchecked"]:
        return mult
    provenance = dict(mult.provenance)
    if header["metrics"]:
        provenance["header_metrics"] = header["metrics"]
        provenance["header_rounding"] = header["rounding"]
    if header["unchecked"]:
        provenance["header_unchecked"] = header["unchecked"]
    hardware = mult.hardware
    if header["hardware"] is not None:
        hardware = {**header["hardware"], **(mult.hardware or {})}
    return replace(mult, provenance=provenance, hardware=hardware)


def header_mismatches(mult: Multiplier, computed: dict[str, float] | None = None) -> list[str]:
    """The header figures of ``mult`` (``provenance["header_metrics"]``) that its table
    contradicts beyond the header's rounding, as ``"key: computed x, header y"``; ``computed``:
    precomputed :func:`.metrics.metrics`."""
    printed = mult.provenance.get("header_metrics") or {}
    if not printed:
        return []
    rounding = mult.provenance.get("header_rounding") or {}
    ours = evoapprox_metrics(mult, metrics(mult) if computed is None else computed)
    return [
        f"{key}: computed {ours[key]:.6g}, header {value:g}"
        for key, value in printed.items()
        if key in ours and abs(ours[key] - value) > header_tolerance(value, rounding.get(key, 0))
    ]


def check_header(mult: Multiplier, source: str) -> Multiplier:
    """``mult`` if its table agrees with its header's error figures, else :class:`HeaderMismatch`
    naming ``source`` and the figures (a file read with the wrong widths or signedness, or not
    the circuit its header describes)."""
    bad = header_mismatches(mult)
    if bad:
        raise HeaderMismatch(
            f"{source}: the table read as {mult.bits_a}x{mult.bits_b} "
            f"{'signed' if mult.signed else 'unsigned'} contradicts the file's EvoApproxLib "
            f"header: metrics differ from the header ({'; '.join(bad)})"
        )
    return mult
