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

The older EvoApprox8b files write unitless figures per technology, ``// Area   (180) =``,
``// Power  (45) = ...``, ``// Delay  (45) = ...``, then ``// MAE =``, ``// MSE =``,
``// WCE =`` and ``// MRE = 1.01 %``, ``// EP = 63.6 %``, ``// WCRE = 100 %`` (their
generated C files as ``/*   Power  (45) = 215.00 */``, one comment per line). The unit of
power depends on the release, named by the ``// Library = ...`` line: ``EvoApprox8b`` prints
uW (``mul8_218``: ``Power (45) = 424.30``), ``cgp-evoapproxlib`` mW (``mul8_000``:
``0.428700``); area is um2 and delay ns in both. Only the 45 nm figures of a known release
become hardware figures (the technology of the current library's PDK45 ones); the others, and
every figure of a file whose release is unknown, are kept in ``provenance["header_unchecked"]``
(``power_180`` ...) rather than guessed. The percentages are rounded to one or two decimals
and MRE averages over every pair (zero products included), so they are kept there too and
never compared.

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
# EvoApprox8b releases (the ``Library =`` line) -> factor of their unitless power to mW.
_LEGACY_POWER_TO_MW = {"evoapprox8b": 1e-3, "cgp-evoapproxlib": 1.0}
_LEGACY_TECH = "45"  # the technology whose unitless figures become hardware figures
# A comment line: ``// ...``, `` * ...`` (inside a block) or ``/* ... */`` on one line.
_COMMENT = r"^\s*(?://|/\*|\*)\s*"
_LIBRARY = re.compile(_COMMENT + r"Library\s*=\s*(?P<name>[^\s*]+)", re.IGNORECASE)

_LINE = re.compile(
    _COMMENT + r"(?P<key>[A-Za-z][A-Za-z0-9_]*%?)\s*(?:\((?P<tech>[A-Za-z0-9]+)\))?"
    r"\s*=\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"\s*(?P<unit>(?:(?!\*/)\S)*)\s*(?:\*/)?\s*$"
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
    from the printed unit; EvoApprox8b's unitless 45 nm lines by their release, see the module
    docstring) and ``source`` (e.g. ``"EvoApproxLib header (PDK45)"``); metrics has the keys
    of :data:`HEADER_METRICS` that are present (percentages stay percentages); ``rounding``
    maps every metrics key to half a unit of its last printed digit; ``unchecked`` holds
    EvoApprox8b's percentages (:data:`LEGACY_PERCENTAGES`) and the hardware figures whose
    unit or technology is not the hardware keys' (``power_180``, or all of them where the
    release is unknown). Only
    the first :data:`HEADER_LINES` lines are read. Lines that are not ``KEY [(tech)] = number
    [unit]`` are ignored; an unknown unit on a hardware figure raises ValueError naming the
    line.
    """
    hardware: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    rounding: dict[str, float] = {}
    unchecked: dict[str, float] = {}
    techs: set[str] = set()
    lines = text.splitlines()[:HEADER_LINES]
    release = next((m["name"].lower() for m in map(_LIBRARY.match, lines) if m), None)
    for lineno, line in enumerate(lines, 1):
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
            factor = _HARDWARE[what][1].get(unit.lower())
        elif key in _LEGACY_HARDWARE and m["tech"] is not None and not unit:
            tech, what = f"{m['tech']} nm", _LEGACY_HARDWARE[key]
            factor = _legacy_factor(what, release)
            if m["tech"] != _LEGACY_TECH or factor is None:
                unchecked[f"{key.lower()}_{m['tech']}"] = number
                continue
        else:
            continue
        target, units = _HARDWARE[what]
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


def _legacy_factor(what: str, release: str | None) -> float | None:
    """Factor of an EvoApprox8b unitless ``what`` figure to the hardware key's unit, or None
    where the release (and so the unit of its power) is unknown."""
    if what != "PWR":
        return 1.0 if release in _LEGACY_POWER_TO_MW else None
    return _LEGACY_POWER_TO_MW.get(release or "")


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
