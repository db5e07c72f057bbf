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
    assert set(rates) == {f"random_{s}" for s in sizes} | {"code_0", "no_codes"}
    assert all(value > 0 for value in rates.values())


def test_too_few_sweeps_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        _module().main(["--sweeps", "0"])
    assert "at least 10" in capsys.readouterr().err
