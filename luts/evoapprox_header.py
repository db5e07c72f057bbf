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

:func:`parse_evoapprox_header` turns them into hardware figures (the keys of
:data:`.multiplier.HARDWARE_KEYS`) and the library's error figures (keys of
:data:`HEADER_METRICS`), with the rounding of every printed figure so that computed metrics
can be compared "within the header's rounding" (:func:`header_tolerance`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

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

# Hardware figure -> (hardware key, {unit: factor to the key's unit}).
_HARDWARE: dict[str, tuple[str, dict[str, float]]] = {
    "PWR": ("power_mw", {"mw": 1.0, "uw": 1e-3, "w": 1e3, "nw": 1e-6}),
    "AREA": ("area_um2", {"um2": 1.0, "um^2": 1.0, "mm2": 1e6, "nm2": 1e-6}),
    "DELAY": ("delay_ns", {"ns": 1.0, "ps": 1e-3, "us": 1e3}),
}

_LINE = re.compile(
    r"^\s*(?://|\*)\s*(?P<key>[A-Za-z][A-Za-z0-9_]*%?)\s*=\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>\S*)\s*$"
)
_HW_KEY = re.compile(r"^(?P<tech>[A-Za-z0-9]+)_(?P<what>PWR|AREA|DELAY)$")
HEADER_LINES = 60  # the block sits at the top of the file; never scan a whole netlist


def _half_ulp(text: str) -> float:
    """Half a unit in the last printed digit of ``text`` (``"0.027"`` -> 0.0005)."""
    exponent = Decimal(text).as_tuple().exponent
    return 0.5 * 10.0 ** int(exponent) if isinstance(exponent, int) else 0.0


def parse_evoapprox_header(text: str) -> dict[str, Any]:
    """Hardware and error figures of an EvoApproxLib file's header comment block.

    Returns ``{"hardware": {...} or None, "metrics": {...}, "rounding": {...}}``: hardware
    has ``power_mw``, ``area_um2``, ``delay_ns`` (converted from the printed unit) and
    ``source`` (e.g. ``"EvoApproxLib header (PDK45)"``); metrics has the keys of
    :data:`HEADER_METRICS` that are present (percentages stay percentages); ``rounding``
    maps every metrics key to half a unit of its last printed digit. Only the first
    :data:`HEADER_LINES` lines are read. Lines that are not ``KEY = number [unit]`` are
    ignored; an unknown unit on a hardware figure raises ValueError naming the line.
    """
    hardware: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    rounding: dict[str, float] = {}
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
        if key in HEADER_METRICS:
            metrics[HEADER_METRICS[key]] = number
            rounding[HEADER_METRICS[key]] = _half_ulp(value)
            continue
        hw = _HW_KEY.match(key)
        if hw is None:
            continue
        target, units = _HARDWARE[hw["what"]]
        factor = units.get(unit.lower())
        if factor is None:
            raise ValueError(
                f"header line {lineno}: unknown unit {unit!r} for {key} "
                f"(expected one of {sorted(units)}): {line.strip()[:120]!r}"
            )
        hardware[target] = number * factor
        techs.add(hw["tech"])
    if hardware:
        hardware["source"] = f"EvoApproxLib header ({', '.join(sorted(techs))})"
    return {"hardware": hardware or None, "metrics": metrics, "rounding": rounding}


def header_tolerance(value: float, half_ulp: float) -> float:
    """Absolute tolerance for comparing a computed figure with a rounded header figure.

    Half a unit of the last printed digit, plus a relative 1e-9 for float noise.
    """
    return half_ulp + 1e-9 * abs(value)


def with_header(mult: Multiplier, text: str) -> Multiplier:
    """``mult`` annotated from the header of its source ``text`` (unchanged if it has none).

    Hardware figures are merged into :attr:`Multiplier.hardware` (figures already set win);
    the library's error figures go to ``provenance["header_metrics"]`` and their rounding to
    ``provenance["header_rounding"]`` (compare with :func:`.metrics.evoapprox_metrics`).
    """
    header = parse_evoapprox_header(text)
    if header["hardware"] is None and not header["metrics"]:
        return mult
    provenance = dict(mult.provenance)
    if header["metrics"]:
        provenance["header_metrics"] = header["metrics"]
        provenance["header_rounding"] = header["rounding"]
    hardware = mult.hardware
    if header["hardware"] is not None:
        hardware = {**header["hardware"], **(mult.hardware or {})}
    return replace(mult, provenance=provenance, hardware=hardware)
