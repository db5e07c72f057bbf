"""Netlist import timings: every EvoApproxLib circuit of ../shared/evoapprox (Verilog and PDK45
gate-level), parsed and simulated over all operand pairs, against loading the same multiplier
from the project's own ``.lut`` file (the baseline).

Run: ``taskset -c 0 pytest bench/bench_netlists.py --benchmark-enable`` (one core).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from appmult_fx.luts.formats import load_multiplier
from appmult_fx.luts.netlist_import import from_netlist

EVOAPPROX = Path(__file__).resolve().parents[2] / "shared" / "evoapprox"
CIRCUITS = sorted(EVOAPPROX.rglob("*.v")) if EVOAPPROX.is_dir() else []


@pytest.fixture(scope="module")
def saved_lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CIRCUITS:
        pytest.skip("../shared is absent")
    path = tmp_path_factory.mktemp("lut") / "m.lut"
    from_netlist(EVOAPPROX / "8x8_unsigned" / "mul8u_2AC.v").save(path)
    return path


def test_baseline_load_lut_file(benchmark, saved_lut: Path) -> None:
    assert benchmark(load_multiplier, saved_lut).bits == 8


@pytest.mark.parametrize("path", CIRCUITS, ids=[p.name for p in CIRCUITS])
def test_import_evoapprox_netlist(benchmark, path: Path) -> None:
    signed = "_signed" in path.parent.name
    mult = benchmark(from_netlist, path, signed=signed)
    assert mult.table.shape == (1 << mult.bits_a, 1 << mult.bits_b)
