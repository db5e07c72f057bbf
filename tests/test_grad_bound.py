"""bench/grad_bound.py: the gradient kernels' table-row loop timed against ``torch.mm``, where
the CPU (AVX-512 F) and a C compiler allow it."""

from __future__ import annotations

import pytest

from tests.bench_scripts import load_bench_script


def _module():
    return load_bench_script("grad_bound")


def test_labels_name_the_table_size_and_the_controls() -> None:
    describe = _module().describe
    assert describe("random_131072") == "random rows of a 128 KB table"
    assert describe("code_0").startswith("every code 0")
    assert describe("no_codes") == "no codes"


def test_loop_reports_every_case(c_probe_toolchain) -> None:
    rates = _module().loop_gmacs(10)
    sizes = (4096, 16384, 32768, 131072, 1048576)
    assert set(rates) == {f"random_{s}" for s in sizes} | {"code_0", "no_codes", "build"}
    assert all(value > 0 for value in rates.values())


def test_too_few_sweeps_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        _module().main(["--sweeps", "0"])
    assert "at least 10" in capsys.readouterr().err


def test_builds_per_mac_count_the_codes_each_side_reaches() -> None:
    entries = _module().entries_per_mac
    assert entries(1, 1, 8) == pytest.approx(1.0)  # one row meets one code: one entry per MAC
    assert entries(256, 512, 8) == entries(512, 256, 8)  # the cheaper side, either way
    assert entries(10**6, 64, 8) == pytest.approx(256 / 10**6, rel=1e-6)  # every code reached
    assert entries(10**6, 10**6, 7) < entries(10**6, 10**6, 8)


def test_bounds_fall_as_builds_slow_and_are_capped_by_the_lookups() -> None:
    bounds = _module().shape_bounds
    fast, slow = bounds(1e9, 40.0, 8), bounds(5.0, 40.0, 8)
    assert set(fast) == {"conv1", "layer1", "layer2.0.conv1", "layer2", "layer3.0.conv1",
                         "layer3", "layer4.0.conv1", "layer4"}  # fmt: skip
    assert all(v == pytest.approx(40.0, rel=1e-6) for v in fast.values())
    assert all(slow[name] < fast[name] for name in fast)
    assert slow["layer4"] < slow["layer3"] < slow["layer2"] < slow["layer1"]
