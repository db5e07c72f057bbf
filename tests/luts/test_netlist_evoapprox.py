"""Every EvoApproxLib circuit of ../shared/evoapprox, read from its Verilog and PDK45 netlist,
equals its C model run by this test's own harness (operands A and B bound by name)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from appmult_fx.luts.netlist_import import parse_netlist
from appmult_fx.luts.netlist_sim import simulate_multiplier
from appmult_fx.luts.user_defined import from_netlist

_NAME = re.compile(r"^mul(?P<a>\d+)(?:x(?P<b>\d+))?(?P<sign>[us])_")
_HARNESS = """#include <stdint.h>
#include <stdio.h>
#include "{source}"
int main(void) {{
    for (unsigned long long A = 0; A < {rows}ULL; ++A)
        for (unsigned long long B = 0; B < {cols}ULL; ++B) {{
            unsigned long long out = (unsigned long long)({symbol}({args}));
            fwrite(&out, sizeof out, 1, stdout);
        }}
    return 0;
}}
"""


def _widths(stem: str) -> tuple[int, int, bool]:
    m = _NAME.match(stem)
    assert m, stem
    a = int(m["a"])
    return a, int(m["b"] or a), m["sign"] == "s"


def c_table(source: Path, build: Path) -> np.ndarray:
    """Ground truth: run the C model on every (A, B), passing A and B to the parameters of
    those names, whatever their order; signed results are the two's-complement value of the
    low bits_a + bits_b bits of the returned code."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler")
    symbol = source.stem
    bits_a, bits_b, signed = _widths(symbol)
    sig = re.search(rf"\b{symbol}\s*\(([^)]*)\)\s*\{{", source.read_text())
    assert sig, f"no definition of {symbol} in {source}"
    params = [re.findall(r"\w+", p)[-1].upper() for p in sig[1].split(",")]
    assert sorted(params) == ["A", "B"], params  # bound by name (any case), in their order
    exe = build / symbol
    harness = build / f"{symbol}_harness.c"
    harness.write_text(
        _HARNESS.format(
            source=source, rows=1 << bits_a, cols=1 << bits_b, symbol=symbol, args=", ".join(params)
        )
    )
    subprocess.run([compiler, "-O1", "-o", str(exe), str(harness)], check=True)
    out = np.frombuffer(subprocess.run([str(exe)], capture_output=True, check=True).stdout, "<u8")
    codes = out.astype(np.int64).reshape(1 << bits_a, 1 << bits_b)
    if signed:
        n = bits_a + bits_b
        codes &= (1 << n) - 1
        codes = np.where(codes >= 1 << (n - 1), codes - (1 << n), codes)
    return codes


def _circuits(shared: Path) -> list[Path]:
    return sorted((shared / "evoapprox").rglob("*.v"))


def test_every_evoapprox_netlist_equals_its_c_model(shared: Path, tmp_path: Path) -> None:
    netlists = _circuits(shared)
    assert len(netlists) >= 9 and any("_pdk45" in p.name for p in netlists)
    truths: dict[str, np.ndarray] = {}
    for path in netlists:
        stem = path.stem.removesuffix("_pdk45")
        if stem not in truths:
            truths[stem] = c_table(path.with_name(stem + ".c"), tmp_path)
        bits_a, bits_b, signed = _widths(stem)
        sim = simulate_multiplier(parse_netlist(path))
        assert (sim.bits_a, sim.bits_b) == (bits_a, bits_b), path
        assert sim.binding.startswith("ports named A and B"), sim.binding
        assert np.array_equal(sim.values(signed), truths[stem]), path
        mult = from_netlist(path, signed=signed)
        assert mult.signed == signed and mult.name == path.stem
        assert (mult.bits_a, mult.bits_b) == (bits_a, bits_b)
        assert torch.equal(mult.table.to(torch.int64), torch.from_numpy(truths[stem]))


def test_mul8x4_is_256_by_16_with_a_the_row_operand(shared: Path) -> None:
    mult = from_netlist(shared / "evoapprox" / "8x4_unsigned" / "mul8x4u_2AN.v")
    assert mult.table.shape == (256, 16) and mult.bits == (8, 4)
    assert (mult.bits_a, mult.bits_b) == (8, 4)
    a = torch.arange(256)[:, None]
    b = torch.arange(16)[None, :]
    assert (mult.table - a * b).abs().max() <= 1  # header: WCE = 1.0, so A really is the rows
    assert mult.hardware == {
        "power_mw": 0.130,
        "area_um2": 312.1,
        "delay_ns": 1.16,
        "source": "EvoApproxLib header (PDK45)",
    }


def _header_figure(path: Path, key: str) -> float:
    m = re.search(rf"^// {key} = ([0-9.]+)", path.read_text(), re.M)
    assert m, (path, key)
    return float(m[1])


def test_hardware_figures_and_cell_counts_from_the_files(shared: Path) -> None:
    for path in _circuits(shared):
        mult = from_netlist(path, signed=_widths(path.stem)[2])
        hw = mult.hardware
        assert hw is not None, path
        assert hw["power_mw"] == _header_figure(path, "PDK45_PWR")
        assert hw["area_um2"] == _header_figure(path, "PDK45_AREA")
        assert hw["delay_ns"] == _header_figure(path, "PDK45_DELAY")
        assert mult.provenance["header_metrics"]["mae"] == _header_figure(path, "MAE")
        # cell instances: `CELL name (` lines (the sample's cells: PDKGEN* modules or PDK45 cells)
        cells = re.findall(r"^\s*[A-Z][A-Z0-9]*X\d\s+\w+\s*\(", path.read_text(), re.M)
        assert hw.get("cells", 0) == len(cells), path
        if path.stem.endswith("_pdk45"):
            assert cells, path
            twin = path.with_name(path.stem.removesuffix("_pdk45") + ".v")
            assert from_netlist(twin).hardware["cells"] == len(cells)  # .v twin: same cells
