"""LUT library timings: 8x8 netlist simulation vs reading the same LUT from the seed's text.

Run: ``pytest bench/bench_luts.py --benchmark-enable`` (the baseline is the text-file load).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from appmult_fx.luts.blif import parse_blif
from appmult_fx.luts.formats import load_multiplier
from appmult_fx.luts.netlist_sim import simulate_multiplier

SEED = Path(__file__).resolve().parents[2] / "shared" / "appmults" / "resub_als"
NAME = "Mult_8_8_MED_183.376_size_209_depth_25"


@pytest.fixture(scope="module")
def seed_dir() -> Path:
    if not SEED.is_dir():
        pytest.skip("../shared is absent")
    return SEED


def test_baseline_read_seed_text_lut(benchmark, seed_dir: Path) -> None:
    mult = benchmark(load_multiplier, seed_dir / f"{NAME}_lutfp.txt")
    assert mult.bits == 8


def test_parse_and_simulate_8x8_blif(benchmark, seed_dir: Path) -> None:
    sim = benchmark(lambda: simulate_multiplier(parse_blif(seed_dir / f"{NAME}_sop.blif")))
    assert sim.codes.shape == (256, 256)


def test_simulate_parsed_8x8_blif(benchmark, seed_dir: Path) -> None:
    netlist = parse_blif(seed_dir / f"{NAME}_sop.blif")
    sim = benchmark(simulate_multiplier, netlist)
    assert sim.codes.shape == (256, 256)
