"""bench/grad_bound.py: the gradient kernels' table-row loop timed against ``torch.mm``, where
the CPU (AVX-512 F) and a C compiler allow it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _module():
    sys.path.insert(0, str(BENCH))  # the script imports bench/port_rates.py, as when run
    try:
        spec = importlib.util.spec_from_file_location("grad_bound", BENCH / "grad_bound.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


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
