"""Every C model of the EvoApproxLib sample in ../shared/evoapprox, against a ground truth the
test builds itself: its own tiny C harness calls the function with A and B bound by name and
prints the table. Also: metrics equal the header's figures within its rounding, hardware
equals the header."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from appmult_fx.luts.c_source import from_c_source
from appmult_fx.luts.formats import load_multiplier
from appmult_fx.luts.metrics import evoapprox_metrics

from appmult_fx.cli import main

_SIGNATURE = re.compile(r"^\w+\s+(mul\w+)\s*\(([^)]*)\)", re.M)
_HEADER = re.compile(r"^// (\S+) = (\S+)", re.M)
# EvoApproxLib's naming: mul<bits_a>[x<bits_b>]<u|s>_<id>
_NAME = re.compile(r"mul(\d)(?:x(\d))?([us])_")


def circuits(shared: Path) -> list[Path]:
    found = sorted((shared / "evoapprox").rglob("mul*.c"))
    assert found, "no C models in ../shared/evoapprox"
    return found


def widths(path: Path) -> tuple[int, int, bool]:
    m = _NAME.match(path.stem)
    assert m, path
    return int(m[1]), int(m[2] or m[1]), m[3] == "s"


def truth(path: Path, tmp: Path) -> np.ndarray:
    """The table by the test's own harness: A, B bound by parameter name, signed results as
    the two's-complement value of the bits_a+bits_b output bits."""
    bits_a, bits_b, signed = widths(path)
    func, params = _SIGNATURE.search(path.read_text()).groups()
    call = ", ".join("a" if p.split()[-1] == "A" or p.split()[-1] == "a" else "b"
                     for p in params.split(","))  # fmt: skip
    w = bits_a + bits_b
    harness = tmp / f"{func}_harness.c"
    harness.write_text(
        f'#include "{path}"\n#include <stdio.h>\nint main(void) {{\n'
        f"  for (long long i = 0; i < {1 << bits_a}; ++i)\n"
        f"    for (long long j = 0; j < {1 << bits_b}; ++j) {{\n"
        f"      long long a = {int(signed)} && i >= {1 << (bits_a - 1)} ? i - {1 << bits_a} : i;\n"
        f"      long long b = {int(signed)} && j >= {1 << (bits_b - 1)} ? j - {1 << bits_b} : j;\n"
        f"      unsigned long long r = (unsigned long long){func}({call}) & {(1 << w) - 1}ULL;\n"
        f'      printf("%lld\\n", {int(signed)} && r >> {w - 1} ? (long long)r - {1 << w}LL'
        f" : (long long)r);\n    }}\n  return 0;\n}}\n"
    )
    exe = tmp / func
    subprocess.run(["cc", "-O0", str(harness), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return np.array(out.split(), dtype=np.int64).reshape(1 << bits_a, 1 << bits_b)


def half_unit(text: str) -> float:
    """Half a unit of the last digit the library printed (``"72829.102e2"`` -> 0.05): it
    prints 2-3 significant digits."""
    mantissa, _, exponent = text.partition("e")
    return 0.5 * 10.0 ** (int(exponent or 0) - len(mantissa.partition(".")[2]))


def header(path: Path) -> dict[str, str]:
    return dict(_HEADER.findall(path.read_text().split("#include")[0]))


def test_every_c_model_equals_the_independent_harness(shared: Path, tmp_path: Path) -> None:
    for path in circuits(shared):
        bits_a, bits_b, signed = widths(path)
        mult = from_c_source(path, (bits_a, bits_b), signed)
        assert mult.name == path.stem and (mult.bits_a, mult.bits_b) == (bits_a, bits_b)
        assert np.array_equal(mult.table.numpy(), truth(path, tmp_path)), path


def test_known_orientation_and_signed_cases(shared: Path, tmp_path: Path) -> None:
    evo = shared / "evoapprox"
    m = from_c_source(evo / "8x8_unsigned" / "mul8u_2AC.c", 8)  # declared f(B, A)
    assert int(m.table[255][20]) == 5157 and m.provenance["operands"] == "by name (B, A)"
    path = evo / "8x8_signed" / "mul8s_1L1G.c"  # returns uint16_t codes
    s = from_c_source(path, 8, signed=True)
    got = s.product(torch.tensor([-100, 100, -3]), torch.tensor([50, -50, 5])).tolist()
    want = truth(path, tmp_path)
    assert got == [want[256 - 100, 50], want[100, 256 - 50], want[256 - 3, 5]]
    assert got[0] < 0 and got[1] < 0  # -4992 and -5376: not the raw codes 60544, 60160
    r = from_c_source(evo / "8x4_unsigned" / "mul8x4u_2AN.c", (8, 4))
    assert tuple(r.table.shape) == (256, 16) and r.bits == (8, 4)


def test_metrics_and_hardware_equal_the_header(shared: Path) -> None:
    for path in circuits(shared):
        bits_a, bits_b, signed = widths(path)
        mult = from_c_source(path, (bits_a, bits_b), signed)
        printed = header(path)
        hw = mult.hardware
        assert hw["power_mw"] == float(printed["PDK45_PWR"]), path
        assert hw["area_um2"] == float(printed["PDK45_AREA"]), path
        assert hw["delay_ns"] == float(printed["PDK45_DELAY"]), path
        computed = evoapprox_metrics(mult)
        names = {"MAE%": "mae_pct", "MAE": "mae", "WCE%": "wce_pct", "WCE": "wce",
                 "WCRE%": "wcre_pct", "EP%": "ep_pct", "MRE%": "mre_pct", "MSE": "mse"}  # fmt: skip
        for key, ours in names.items():
            text = printed[key]
            tolerance = half_unit(text) * (1 + 1e-9)
            assert abs(computed[ours] - float(text)) <= tolerance, (path, key, computed)
        assert mult.provenance["header_metrics"]["mre_pct"] == float(printed["MRE%"])


def test_cli_build_of_a_rectangular_c_model(shared: Path, tmp_path: Path, capsys) -> None:
    src = shared / "evoapprox" / "8x4_unsigned" / "mul8x4u_2AN.c"
    out = tmp_path / "m.lut"
    assert main(["lut", "build", str(src), "--bits", "8x4", "-o", str(out)]) == 0
    m = load_multiplier(out)
    assert m.bits == (8, 4) and m.has_gradients and m.hardware["area_um2"] == 312.1
    assert np.array_equal(m.table.numpy(), truth(src, tmp_path))
    assert main(["lut", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "8x4-bit unsigned" in text and "power 0.13 mW, area 312.1 um2, delay 1.16 ns" in text
    with pytest.raises(SystemExit):  # argparse: "expected N or AxB (e.g. 8 or 8x4)"
        main(["lut", "build", str(src), "--bits", "8y4", "-o", str(out)])
    assert "expected N or AxB" in capsys.readouterr().err


def test_readme_tables_agree_with_computed_metrics(shared: Path) -> None:
    """The folders' README tables (MAE%, WCE%, EP%, MRE%, MSE) against our metrics."""
    rows = {}
    for readme in (shared / "evoapprox").rglob("README*.md"):
        for line in readme.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 6 and cells[0].startswith("mul"):
                rows[cells[0]] = cells[1:6]
    checked = 0
    for path in circuits(shared):
        if path.stem not in rows:
            continue
        bits_a, bits_b, signed = widths(path)
        ours = evoapprox_metrics(from_c_source(path, (bits_a, bits_b), signed))
        for key, text in zip(("mae_pct", "wce_pct", "ep_pct", "mre_pct", "mse"), rows[path.stem]):
            tolerance = half_unit(text) * (1 + 1e-9)
            assert abs(ours[key] - float(text)) <= tolerance, (path, key, ours)
        checked += 1
    assert checked == len(circuits(shared))  # every sample circuit is listed in a README
