"""Error metrics: the seed files' INFO lines, a hand-computed case, signed multipliers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from appmult_fx.luts.metrics import METRIC_NAMES, metrics
from appmult_fx.luts.multiplier import Multiplier
from appmult_fx.luts.registry import multiplier


def test_metrics_equal_the_seed_info_lines(seed_luts: dict[Path, Multiplier]) -> None:
    checked = 0
    for path, mult in seed_luts.items():
        info = mult.provenance.get("seed_info", {})
        m = metrics(mult)
        if "Error rate" in info:  # forward files: C++ default formatting, 6 significant digits
            assert f"{m['er']:.6g}" == info["Error rate"], path
            assert f"{m['med']:.6g}" == info["Mean error distance"], path
            assert f"{m['nmed']:.6g}" == info["Normalized mean error distance"], path
            assert f"{m['mse']:.6g}" == info["Mean square error"], path
            checked += 1
        key = "between lut_appmult and lut_mult"
        if f"Error rate {key}" in info:  # gradient files: full precision, percentages
            assert m["er"] * 100 == pytest.approx(float(info[f"Error rate {key}"][:-1]), rel=1e-7)
            assert m["med"] == pytest.approx(float(info[f"Mean error distance {key}"]), rel=1e-7)
            nmed = float(info[f"Normalized mean error distance {key}"][:-1]) / 100
            assert m["nmed"] == pytest.approx(nmed, rel=1e-6)
            assert m["wce"] == float(info[f"Maximum error distance {key}"])
            checked += 1
    assert checked == 19  # 9 forward files with INFO lines + 10 gradient files


def test_hand_computed_metrics() -> None:
    exact = multiplier("mul2u_exact")
    table = exact.table.clone()
    table[3, 3] = 7  # error a*b - LUT = 9 - 7 = 2
    table[0, 1] = 1  # error -1
    m = metrics(Multiplier("t", 2, False, table))
    assert set(m) == set(METRIC_NAMES)
    assert m["er"] == 2 / 16 and m["med"] == 3 / 16 and m["nmed"] == 3 / 16 / 16
    assert m["mse"] == 5 / 16 and m["wce"] == 2 and m["bias"] == 1 / 16
    assert m["mred"] == pytest.approx((2 / 9) / 9)  # 9 pairs have a*b != 0; (0,1) has a*b = 0


def test_signed_metrics_use_signed_products() -> None:
    assert all(v == 0 for v in metrics(multiplier("mul8s_exact")).values())
    exact = multiplier("mul3s_exact")
    table = exact.table.clone()
    table[4, 4] = 0  # (-4) * (-4) = 16 -> error 16
    m = metrics(Multiplier("t", 3, True, table))
    assert (
        m["wce"] == 16 and m["bias"] == 16 / 64 and m["mred"] == pytest.approx(1 / 49)
    )  # 7 x 7 pairs have a*b != 0


def test_mitchell_never_overestimates() -> None:
    m = metrics(multiplier("mul8u_mitchell"))
    assert m["bias"] == m["med"] > 0  # every error a*b - LUT is >= 0
    table = multiplier("mul8u_mitchell").table
    assert torch.all(multiplier("mul8u_exact").table >= table)
    assert np.isclose(m["nmed"], m["med"] / 65536)
