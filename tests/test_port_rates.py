"""bench/port_rates.py: the forward's port-5 bound from instruction cycles (hand-computed
figures), and the probe itself where the CPU and a C compiler allow it."""

from __future__ import annotations

import pytest

from tests.bench_scripts import load_bench_script


def _module():
    return load_bench_script("port_rates")


def test_bound_counts_two_permutes_and_two_unpacks_per_64_codes() -> None:
    cycles = {"vpermb": 1.0, "vpermi2b": 2.0, "vpunpcklbw": 1.0}
    limit = _module().bounds(cycles, ghz=4.0)
    # 64 MACs per (2 permutes + 2 unpacks) port-5 cycles, four per plane pair at P = 256
    assert limit == {64: 64 / 4 * 4.0, 128: 64 / 6 * 4.0, 256: 64 / 10 * 4.0}


def test_probe_reports_every_instruction(c_probe_toolchain) -> None:
    ns = _module().instruction_ns(200_000)
    expected = {"vpaddd_chain", "vpermb", "vpermi2b", "vpunpcklbw", "vpdpwssd", "vpblendmb"}
    assert set(ns) == expected
    assert all(value > 0 for value in ns.values())


def test_too_few_iterations_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        _module().main(["--iterations", "0"])
    assert "at least 1000" in capsys.readouterr().err
