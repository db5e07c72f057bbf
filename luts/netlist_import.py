"""Multipliers from gate-level netlists: BLIF or structural Verilog (EvoApproxLib, PDK45)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .blif import parse_blif
from .cells import Cell, cell_library
from .evoapprox_header import HeaderMismatch, check_header, with_header
from .evoapprox_names import circuit_name, inferred_note, named_operands
from .multiplier import Multiplier
from .netlist import Netlist, NetlistError
from .netlist_sim import simulate_multiplier
from .verilog import parse_verilog

_SUFFIX = re.compile(r"_sop$")
VERILOG_SUFFIXES = (".v", ".sv")


def parse_netlist(
    path: str | Path,
    top: str | None = None,
    cells: Mapping[str, Cell | Mapping[str, str]] | None = None,
) -> Netlist:
    """Parse a Verilog (``.v``/``.sv``) or BLIF file, library cells (:mod:`.cells`) included."""
    path = Path(path)
    library = cell_library(cells)
    if path.suffix in VERILOG_SUFFIXES:
        return parse_verilog(path, top, library)
    return parse_blif(path, top, library)


def _head(path: Path, lines: int = 80) -> str:
    with path.open(encoding="utf-8", errors="replace") as f:
        return "".join(line for _, line in zip(range(lines), f, strict=False))


def from_netlist(
    path: str | Path,
    signed: bool | None = None,
    name: str | None = None,
    top: str | None = None,
    *,
    operands: tuple[str, str] | None = None,
    cells: Mapping[str, Cell | Mapping[str, str]] | None = None,
) -> Multiplier:
    """Simulate a gate-level multiplier (BLIF, or structural Verilog ``.v``) over all inputs.

    ``table[a][b] = f(A=a, B=b)``: input ports named ``A`` and ``B`` (any case) are the
    operands and give their widths; ``operands=("X", "Y")`` names other ports; without either,
    two input ports are taken in port order, else the input bits are split in half (see
    :mod:`.netlist_sim`; ``provenance["operands"]`` says which). When ``signed``, entries are
    the two's-complement value of the ``bits_a + bits_b``-bit output, whatever the output
    port's width (an output narrower than that warns: an adder's, say). ``signed`` defaults to
    what an EvoApproxLib file name says (``mul8s_...``), else False; widths or signedness that
    contradict the name, an adder's name (``add8u_...``) and a table that contradicts the
    header's error figures are refused (:mod:`.evoapprox_names`,
    :func:`.evoapprox_header.check_header`). ``cells`` adds cell definitions to the built-in
    OSU FreePDK45 library (:mod:`.cells`). An EvoApproxLib header sets
    :attr:`Multiplier.hardware` (plus ``cells``, the number of library cells instantiated,
    for gate-level netlists) and its error figures go to ``provenance["header_metrics"]``
    (:func:`.evoapprox_header.with_header`). The default name is the file stem without a
    ``_sop`` suffix.
    """
    path = Path(path)
    netlist = parse_netlist(path, top, cells)
    sim = simulate_multiplier(netlist, operands)
    try:
        _, named_signed = named_operands(circuit_name(path.stem), (sim.bits_a, sim.bits_b), signed)
    except ValueError as exc:
        raise NetlistError(path, None, f"{exc} (operands from the ports: {sim.binding})") from exc
    note = inferred_note(circuit_name(path.stem), (sim.bits_a, sim.bits_b), signed)
    signed = bool(named_signed)
    if sim.out_bits < sim.bits_a + sim.bits_b:
        warnings.warn(
            f"{path.name}: output of {sim.out_bits} bits, narrower than the "
            f"{sim.bits_a + sim.bits_b} bits of a {sim.bits_a}x{sim.bits_b} product: is this "
            "a multiplier?",
            stacklevel=2,
        )
    fmt = "verilog" if path.suffix in VERILOG_SUFFIXES else "blif"
    provenance: dict[str, Any] = {
        "source": "netlist",
        "path": str(path),
        "format": fmt,
        "top": netlist.top,
        "operands": sim.binding,
        "output_bits": sim.out_bits,
    }
    count = netlist.cell_count()
    try:
        mult = Multiplier(
            name or _SUFFIX.sub("", path.stem),
            (sim.bits_a, sim.bits_b),
            signed,
            sim.values(signed),
            provenance=provenance,
            hardware={"cells": count} if count else None,
        )
        mult = check_header(with_header(mult, _head(path)), path.name)
    except HeaderMismatch as exc:
        raise HeaderMismatch(f"{exc}{note}") from exc
    except ValueError as exc:  # widths out of range, outputs that do not fit, a bad header
        raise NetlistError(path, None, f"{exc} (operands: {sim.binding}){note}") from exc
    if mult.hardware is not None and "source" not in mult.hardware:
        mult = mult.with_hardware(source="netlist cell count")
    return mult
