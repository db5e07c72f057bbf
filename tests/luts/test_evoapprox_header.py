"""EvoApproxLib header comment blocks -> hardware figures and the library's error figures."""

from __future__ import annotations

import pytest
from appmult_fx.luts.evoapprox_header import parse_evoapprox_header

HEADER = """/***
* This code is a part of EvoApproxLib library (ehw.fit.vutbr.cz/approxlib)
***/
// MAE% = 3.08 %
// MAE = 2016
// WCE% = 12.30 %
// WCE = 8064
// WCRE% = 6300.00 %
// EP% = 98.05 %
// MRE% = 135.77 %
// MSE = 72829.102e2
// PDK45_PWR = 52 uW
// PDK45_AREA = 172.2 um2
// PDK45_DELAY = 890 ps
#include <stdint.h>
"""


def test_header_figures_units_and_rounding() -> None:
    got = parse_evoapprox_header(HEADER)
    assert got["hardware"] == pytest.approx(
        {"power_mw": 0.052, "area_um2": 172.2, "delay_ns": 0.89}
        | {"source": "EvoApproxLib header (PDK45)"}
    )
    assert got["metrics"] == {
        "mae_pct": 3.08, "mae": 2016.0, "wce_pct": 12.3, "wce": 8064.0,
        "wcre_pct": 6300.0, "ep_pct": 98.05, "mre_pct": 135.77, "mse": 7282910.2,
    }  # fmt: skip
    assert got["rounding"]["mae_pct"] == pytest.approx(0.005)
    assert got["rounding"]["mae"] == pytest.approx(0.5)
    assert got["rounding"]["mse"] == pytest.approx(0.05)


def test_no_header_and_bad_unit() -> None:
    assert parse_evoapprox_header("module m(a, b, o);\n") == {
        "hardware": None, "metrics": {}, "rounding": {}, "unchecked": {}
    }  # fmt: skip
    with pytest.raises(ValueError, match="line 1.*unknown unit 'furlong'"):
        parse_evoapprox_header("// PDK45_AREA = 3 furlong\n")


def test_header_of_every_shared_file(shared) -> None:
    files = sorted((shared / "evoapprox").rglob("mul*.[cv]"))
    assert files
    for path in files:
        got = parse_evoapprox_header(path.read_text())
        assert set(got["hardware"]) == {"power_mw", "area_um2", "delay_ns", "source"}, path
        assert len(got["metrics"]) == 8, path
