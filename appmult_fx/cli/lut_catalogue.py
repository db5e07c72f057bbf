"""``appmult-fx lut import`` and the ``--catalogue`` forms of ``lut list`` / ``lut plot``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..luts.catalogue import read_catalogue
from ..luts.library import import_library

SORT_KEYS = {"power": ("hardware", "power_mw"), "area": ("hardware", "area_um2"),
             "delay": ("hardware", "delay_ns"), "mred": ("metrics", "mred"),
             "med": ("metrics", "med"), "wce": ("metrics", "wce"), "er": ("metrics", "er"),
             "name": (None, "name")}  # fmt: skip
_COLUMNS = (("power_mw", "hardware"), ("area_um2", "hardware"), ("delay_ns", "hardware"),
            ("er", "metrics"), ("med", "metrics"), ("mred", "metrics"),
            ("wce", "metrics"))  # fmt: skip


def format_hardware(hardware: dict[str, Any] | None) -> str:
    """``power 0.311 mW, area 508.3 um2, delay 1.39 ns (source)`` or ``unknown``."""
    if not hardware:
        return "unknown"
    parts = [
        f"{label} {hardware[key]:g} {unit}"
        for key, label, unit in (
            ("power_mw", "power", "mW"),
            ("area_um2", "area", "um2"),
            ("delay_ns", "delay", "ns"),
            ("cells", "cells", ""),
        )
        if key in hardware
    ]
    source = f" ({hardware['source']})" if "source" in hardware else ""
    return ", ".join(p.rstrip() for p in parts) + source


def _import(args: argparse.Namespace) -> int:
    report = import_library(args.directory, args.out, workers=args.workers, progress=not args.quiet)
    for problem in report.problems:
        print(f"  problem: {problem}", file=sys.stderr)
    replaced = f" ({len(report.replaced)} replacing an earlier entry)" if report.replaced else ""
    kept = f"{len(report.kept)} earlier entries kept, " if report.kept else ""
    print(
        f"wrote {report.catalogue}: {len(report.entries)} multipliers imported{replaced}, "
        f"{kept}{len(report.refused)} refused, {len(report.problems)} problems reported"
    )
    if report.refused:
        print(
            f"refused: {', '.join(report.refused)} (the catalogue holds the others; exit 1)",
            file=sys.stderr,
        )
    return 1 if report.refused else 0


def _sort_value(entry: dict[str, Any], key: str) -> tuple[int, Any]:
    group, field = SORT_KEYS[key]
    value = entry[field] if group is None else (entry[group] or {}).get(field)
    return (value is None, value if value is not None else 0)  # unknown figures last


def list_catalogue(args: argparse.Namespace) -> int:
    """Print a catalogue's multipliers with hardware figures and metrics, sorted."""
    entries = sorted(read_catalogue(args.catalogue), key=lambda e: _sort_value(e, args.sort))
    width = max([18, *(len(e["name"]) + 2 for e in entries)])
    header = f"{'name':<{width}}{'widths':>8}" + "".join(f"{c:>12}" for c, _ in _COLUMNS)
    print(header)
    print("-" * len(header))
    for e in entries:
        widths = f"{e['bits_a']}x{e['bits_b']}{'s' if e['signed'] else 'u'}"
        cells = []
        for column, group in _COLUMNS:
            value = (e[group] or {}).get(column)
            cells.append(f"{'-':>12}" if value is None else f"{value:>12.5g}")
        print(f"{e['name']:<{width}}{widths:>8}" + "".join(cells))
    return 0


def plot_catalogue(args: argparse.Namespace) -> int:
    """Draw power (or another cost) against an error metric, the Pareto front marked."""
    from ..luts.plot import plot_tradeoff

    entries = read_catalogue(args.catalogue)
    out, front = plot_tradeoff(entries, args.output, error=args.error, cost=args.cost)
    print(f"wrote {out}: {len(entries)} multipliers, Pareto front: {', '.join(front) or '-'}")
    return 0


def register_import(cmds: argparse._SubParsersAction) -> None:
    """Add ``lut import``."""
    p = cmds.add_parser(
        "import",
        help="import every multiplier under a folder (C, Verilog, BLIF, LUT files)",
        description="Build every circuit under DIRECTORY from all its sources, cross-check "
        "them and the header figures, write one .lut per multiplier and catalogue.json. "
        "Exit status 1 when any circuit was refused (the catalogue then holds the others).",
    )
    p.add_argument("directory", help="library folder (e.g. an EvoApproxLib checkout)")
    p.add_argument("--out", required=True, help="catalogue folder to write")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_import)
