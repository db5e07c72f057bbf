"""Import a whole multiplier library (EvoApproxLib and the like) into a catalogue.

Every file under the root with a known suffix is a source: C/C++ models (``.c .cc .cpp
.cxx``), Verilog (``.v .sv``, gate-level ``*_pdk45.v`` and generic ``*_gen.v`` included),
BLIF (``.blif``) and LUT files (``.lut .npz .txt .bin``). Sources of one circuit share a name
(file stem without ``_pdk45``/``_gen``/``_sop``/``_lutfp...``) in one folder. Widths and
signedness come from EvoApproxLib's naming (``mul8u_``, ``mul8s_``, ``mul8x4u_``: A x B bits,
``u``/``s``; :mod:`.evoapprox_names`), else from the netlist's ports (unsigned unless
``signed=True``), else from ``bits=``. Adders (``add8u_...``) and widths above 8 bits are
refused with the reason.

Each circuit is built from every source (in parallel, one process per circuit); a source
that fails is reported and skipped, the others still count. All tables of a circuit must be
equal (C against Verilog against gate netlist), and the computed metrics must equal the
figures of an EvoApproxLib header within its rounding; otherwise the circuit is refused and
reported. Imported circuits are written as ``<name>.lut`` beside ``catalogue.json``
(:mod:`.catalogue`). Importing into a folder that already holds a catalogue adds to it: an
earlier entry is kept unless this import brings a circuit of the same name and the same table
(sha256), which replaces it; a circuit whose name (or ``.lut`` file) an earlier entry of
another table holds is refused and reported, the earlier entry and its file untouched.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .catalogue import CATALOGUE_FILE, catalogue_entry, read_catalogue, write_catalogue
from .evoapprox_header import HeaderMismatch, header_mismatches
from .evoapprox_names import circuit_name, evoapprox_widths
from .format_errors import LutFormatError
from .formats import load_multiplier, save_multiplier
from .metrics import metrics
from .multiplier import Multiplier
from .user_defined import from_c_source, from_netlist

C_SOURCES = {".c", ".cc", ".cpp", ".cxx"}
NETLISTS = {".v", ".sv", ".blif"}
LUT_FILES = {".lut", ".npz", ".txt", ".bin"}


@dataclass
class Circuit:
    """The sources of one circuit and how to read them."""

    name: str
    sources: list[Path]
    root: Path
    out: Path
    bits: int | tuple[int, int] | None = None
    signed: bool | None = None
    # sha256 of the multiplier the catalogue already holds under this name (or in this file)
    existing_sha256: str | None = None


@dataclass
class CircuitResult:
    """What importing one circuit gave: a catalogue entry, and/or problems per source."""

    name: str
    entry: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    """The outcome of :func:`import_library`: ``entries`` imported by this call (``replaced``
    names those that replaced an earlier entry of the same table), ``kept`` the names of the
    earlier entries of the catalogue left as they were, ``refused`` the circuits not imported
    (their problems in ``problems``)."""

    catalogue: Path
    entries: list[dict[str, Any]]
    problems: list[str]
    refused: list[str]
    kept: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)


def find_circuits(
    root: Path, out: Path, bits: int | tuple[int, int] | None, signed: bool
) -> list[Circuit]:
    """Group the sources under ``root`` (skipping ``out``) by folder and circuit name."""
    groups: dict[tuple[Path, str], list[Path]] = {}
    known = C_SOURCES | NETLISTS | LUT_FILES
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in known or out in path.parents:
            continue
        name = circuit_name(path.stem)
        groups.setdefault((path.parent, name), []).append(path)
    circuits = []
    for (_, name), sources in groups.items():
        evo = evoapprox_widths(name)
        circuit = Circuit(name, sources, root, out, bits, signed)
        if evo is not None:
            circuit.bits, circuit.signed = evo
        circuits.append(circuit)
    return circuits


def _read(path: Path, circuit: Circuit) -> Multiplier:
    if path.suffix in C_SOURCES:
        if circuit.bits is None:
            raise ValueError(
                "operand widths unknown: name the circuit like EvoApproxLib (mul8u_..., "
                "mul8x4u_...), put its Verilog beside it, or pass bits="
            )
        return from_c_source(path, circuit.bits, bool(circuit.signed), name=circuit.name)
    if path.suffix in NETLISTS:
        return from_netlist(path, signed=bool(circuit.signed), name=circuit.name)
    return load_multiplier(path)


def _first_difference(a: Multiplier, b: Multiplier) -> str:
    if a.table.shape != b.table.shape or a.signed != b.signed:
        return f"{a.widths}{'s' if a.signed else 'u'} vs {b.widths}{'s' if b.signed else 'u'}"
    i, j = (int(x) for x in np.argwhere((a.table != b.table).numpy())[0])
    return f"table[{i}][{j}] = {int(a.table[i, j])} vs {int(b.table[i, j])}"


def import_circuit(circuit: Circuit) -> CircuitResult:
    """Build, cross-check and save one circuit (runs in a worker process)."""
    result = CircuitResult(circuit.name)
    built: list[tuple[Path, Multiplier]] = []
    if circuit.bits is None and any(p.suffix in C_SOURCES for p in circuit.sources):
        netlists = [p for p in circuit.sources if p.suffix in NETLISTS]
        circuit.sources = netlists + [p for p in circuit.sources if p not in netlists]
    for path in circuit.sources:
        rel = path.relative_to(circuit.root).as_posix()
        try:
            mult = _read(path, circuit)
        except HeaderMismatch as exc:  # the circuit is not what its header says
            result.problems.append(f"{circuit.name}: refused: {exc}")
            return result
        except Exception as exc:  # every failure of one source is reported, none aborts
            result.problems.append(f"{rel}: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        if circuit.bits is None:  # widths learnt from a netlist's ports
            circuit.bits = mult.bits
        built.append((path, mult))
    if not built:
        result.problems.append(f"{circuit.name}: refused (no source could be read)")
        return result
    first_path, first = built[0]
    for path, other in built[1:]:
        if other.signed != first.signed or not np.array_equal(other.table, first.table):
            result.problems.append(
                f"{circuit.name}: refused: {path.name} and {first_path.name} disagree "
                f"({_first_difference(other, first)})"
            )
            return result
    hardware: dict[str, Any] = {}
    for _, m in built:
        hardware.update(m.hardware or {})
    mult = first if not hardware else first.with_hardware(**hardware)
    computed = metrics(mult)
    for _, m in built:
        bad = header_mismatches(m, computed)
        if bad:
            result.problems.append(
                f"{circuit.name}: refused: metrics differ from the header ({'; '.join(bad)})"
            )
            return result
    file = f"{circuit.name}.lut"
    if circuit.existing_sha256 is not None and circuit.existing_sha256 != mult.sha256:
        result.problems.append(
            f"{circuit.name}: refused: the catalogue already holds a different multiplier "
            f"named {circuit.name} or stored in {file} (sha256 {circuit.existing_sha256[:12]}..., "
            f"this one {mult.sha256[:12]}...); the earlier entry and its file are kept: import "
            "into another catalogue folder, or rename one of the circuits"
        )
        return result
    save_multiplier(mult, circuit.out / file)
    sources = [p.relative_to(circuit.root).as_posix() for p, _ in built]
    result.entry = catalogue_entry(mult, file, computed, sources)
    return result


def import_library(
    root: str | Path,
    out: str | Path,
    workers: int | None = None,
    bits: int | tuple[int, int] | None = None,
    signed: bool = False,
    progress: bool = True,
) -> ImportReport:
    """Import every multiplier under ``root`` into the catalogue folder ``out``.

    ``workers``: processes (default: the CPU count; ``1`` runs in this process). ``bits`` /
    ``signed``: for circuits whose widths neither their name nor a netlist tells. Returns
    the catalogue path, its entries and the problems met (also the refused circuits).
    """
    root, out = Path(root).resolve(), Path(out).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder to import")
    out.mkdir(parents=True, exist_ok=True)
    existing = _existing_entries(out)
    circuits = find_circuits(root, out, bits, signed)
    for circuit in circuits:
        owner = existing.get(circuit.name) or next(
            (e for e in existing.values() if e["file"] == f"{circuit.name}.lut"), None
        )
        circuit.existing_sha256 = owner["sha256"] if owner else None
    names = [c.name for c in circuits]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"circuit names occur in several folders under {root}: {duplicates[:10]}; "
            "import those folders into separate catalogues"
        )
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(circuits), desc="importing", unit="circuit", disable=not progress)
    results: list[CircuitResult] = []
    if workers == 1:
        for circuit in circuits:
            results.append(import_circuit(circuit))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=min(workers, max(1, len(circuits)))) as pool:
            futures = [pool.submit(import_circuit, c) for c in circuits]
            for future in as_completed(futures):
                results.append(future.result())
                bar.update()
    bar.close()
    results.sort(key=lambda r: r.name)
    entries = sorted((r.entry for r in results if r.entry is not None), key=lambda e: e["name"])
    new = {e["name"] for e in entries}
    kept = [e for name, e in existing.items() if name not in new]
    merged = sorted(kept + entries, key=lambda e: e["name"])
    path = write_catalogue(merged, out / CATALOGUE_FILE)
    return ImportReport(
        path,
        entries,
        [p for r in results for p in r.problems],
        [r.name for r in results if r.entry is None],
        kept=[e["name"] for e in kept],
        replaced=sorted(new & set(existing)),
    )


def _existing_entries(out: Path) -> dict[str, dict[str, Any]]:
    """The entries of the catalogue already in ``out`` (by name; none when there is no
    ``catalogue.json``): an import adds to them instead of dropping them. An unreadable
    catalogue is an error rather than something to overwrite."""
    path = out / CATALOGUE_FILE
    if not path.exists():
        return {}
    entries = read_catalogue(path)  # LutFormatError naming the file when it is not one
    by_name: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if entry["name"] in by_name:
            raise LutFormatError(
                path, f"lists {entry['name']!r} twice; fix it before importing into it"
            )
        by_name[entry["name"]] = entry
    return by_name
