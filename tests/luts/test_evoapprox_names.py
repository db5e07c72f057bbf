"""Single-file imports checked against EvoApproxLib's names and headers: widths and
signedness from a ``mul8x4u_`` / ``mul8s_`` name, contradictions refused, adders refused,
headers the table contradicts refused, EvoApprox8b's legacy header read, ``_gen.v`` twins
grouped with their C model."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from appmult_fx.luts.evoapprox_header import HeaderMismatch, parse_evoapprox_header
from appmult_fx.luts.evoapprox_names import circuit_name, evoapprox_widths
from appmult_fx.luts.library import import_library
from appmult_fx.luts.user_defined import from_c_source, from_netlist

from .test_library import C_EXACT, HEADER, V_2x2

LEGACY = """// Library = cgp-evoapproxlib
// Circuit = {name}.v
// Area   (45) = 662.000000
// Delay  (45) = 1.190000
// Power  (45) = 0.428700
// MAE = {mae}
// MSE = 0.000000
// MRE = 1.990000 %
// WCE = 0
// WCRE = 560.000000 %
// EP = 86.500000 %
"""
V_2x2_NARROW = """module {name}(A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [2:0] O;
  assign O[0] = A[0] & B[0];
  assign O[1] = A[1] ^ B[1];
  assign O[2] = A[1] & B[1];
endmodule
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPMULT_FX_CACHE_DIR", str(tmp_path / "cache"))


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _exact_c(tmp_path: Path, name: str, header: str = "") -> Path:
    text = header or "#include <stdint.h>\n"
    return _file(tmp_path, f"{name}.c", text + C_EXACT.format(name=name, bias=0))


def test_names_give_widths_and_signedness() -> None:
    assert evoapprox_widths("mul8x4u_2AN") == ((8, 4), False)
    assert evoapprox_widths("mul8s_1KVP_pdk45") == ((8, 8), True)
    assert evoapprox_widths("mul12u_pwr_0_000_mae_18_7378") == ((12, 12), False)
    assert evoapprox_widths("mul8_000") is None and evoapprox_widths("my_mult") is None
    assert circuit_name("mul8u_pwr_0_000_mae_08_0380_gen") == "mul8u_pwr_0_000_mae_08_0380"


def test_c_source_widths_from_the_name_and_contradictions_refused(tmp_path: Path) -> None:
    path = _exact_c(tmp_path, "mul4x2u_ab")
    mult = from_c_source(path)  # widths and signedness from the name
    a, b = np.arange(16)[:, None], np.arange(4)[None, :]
    assert mult.bits == (4, 2) and not mult.signed
    assert np.array_equal(mult.table.numpy(), a * b)
    with pytest.raises(ValueError, match=r"named as a 4x2 unsigned .* but bits=4 was given"):
        from_c_source(path, bits=4)
    with pytest.raises(ValueError, match=r"named as an unsigned .* but signed=True was given"):
        from_c_source(path, bits=(4, 2), signed=True)
    anonymous = _exact_c(tmp_path, "approx_mul")
    with pytest.raises(ValueError, match="operand widths unknown; pass bits="):
        from_c_source(anonymous)
    assert from_c_source(anonymous, bits=2).table.shape == (4, 4)


def test_widths_past_eight_bits_named_in_the_refusal(tmp_path: Path) -> None:
    path = _exact_c(tmp_path, "mul12u_big")
    with pytest.raises(ValueError, match=r"named as a 12x12 unsigned .*\[2, 8\]"):
        from_c_source(path)


def test_adders_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="adder"):
        from_c_source(_exact_c(tmp_path, "add2u_x"), bits=2)
    with pytest.raises(ValueError, match="adder"):
        from_netlist(_file(tmp_path, "add2u_y.v", V_2x2.format(name="add2u_y", o0="A[0]&B[0]")))


def test_netlist_signedness_from_the_name(tmp_path: Path) -> None:
    text = V_2x2.format(name="mul2s_t", o0="A[0] & B[0]")  # the 4-bit unsigned product
    mult = from_netlist(_file(tmp_path, "mul2s_t.v", text))
    assert mult.signed  # read as the name says: output bits as two's complement
    a, b = np.arange(4)[:, None], np.arange(4)[None, :]
    raw = a * b
    assert np.array_equal(mult.table.numpy(), np.where(raw >= 8, raw - 16, raw))
    with pytest.raises(ValueError, match="named as a signed .* but signed=False"):
        from_netlist(tmp_path / "mul2s_t.v", signed=False)


def test_narrow_output_warns(tmp_path: Path) -> None:
    path = _file(tmp_path, "narrow.v", V_2x2_NARROW.format(name="narrow"))
    with pytest.warns(UserWarning, match="output of 3 bits, narrower than the 4 bits"):
        from_netlist(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_netlist(_file(tmp_path, "full.v", V_2x2.format(name="full", o0="A[0] & B[0]")))


def test_single_file_header_contradiction_refused(tmp_path: Path) -> None:
    liar = HEADER.format(mae_pct="0.00", mae=3, power=0.01)
    with pytest.raises(HeaderMismatch, match=r"mae: computed 0, header 3"):
        from_c_source(_exact_c(tmp_path, "mul2u_liar", liar))
    honest = HEADER.format(mae_pct="0.00", mae=0, power=0.01)
    assert from_c_source(_exact_c(tmp_path, "mul2u_honest", honest)).hardware["power_mw"] == 0.01
    with pytest.raises(HeaderMismatch, match="mae: computed 0, header 3"):
        from_netlist(
            _file(tmp_path, "m.v", liar.replace("#include <stdint.h>\n", "") + V_2x2.format(
                name="m", o0="A[0] & B[0]"))
        )  # fmt: skip


def test_legacy_evoapprox8b_header() -> None:
    got = parse_evoapprox_header(LEGACY.format(name="mul8_000", mae="98.527100"))
    assert got["hardware"] == {
        "area_um2": 662.0, "delay_ns": 1.19, "power_mw": 0.4287,
        "source": "EvoApproxLib header (45 nm)",
    }  # fmt: skip
    assert got["metrics"] == {"mae": 98.5271, "mse": 0.0, "wce": 0.0}
    assert got["unchecked"] == {"mre_pct": 1.99, "wcre_pct": 560.0, "ep_pct": 86.5}


EVOAPPROX8B = """// Library = EvoApprox8b
// Circuit = mul8_218
// Area   (180) = 9247
// Delay  (180) = 2.980
// Power  (180) = 4910.60
// Area   (45) = 666
// Delay  (45) = 1.130
// Power  (45) = 424.30
// Nodes = 136
// MAE = 26.61816
// MRE = 1.01 %
"""


def test_evoapprox8b_release_prints_power_in_microwatts() -> None:
    """The public EvoApprox8b files print uW (mul8_218: 424.30 at 45 nm, i.e. 0.4243 mW); only
    the 45 nm figures become hardware figures, the 180 nm ones are kept aside."""
    got = parse_evoapprox_header(EVOAPPROX8B)
    assert got["hardware"]["power_mw"] == pytest.approx(0.4243)
    assert (got["hardware"]["area_um2"], got["hardware"]["delay_ns"]) == (666.0, 1.13)
    assert got["unchecked"] == {
        "area_180": 9247.0, "delay_180": 2.98, "power_180": 4910.6, "mre_pct": 1.01,
    }  # fmt: skip
    unknown = parse_evoapprox_header(EVOAPPROX8B.replace("EvoApprox8b", "someone-else"))
    assert unknown["hardware"] is None  # the unit of an unknown release's power is not guessed
    assert unknown["unchecked"]["power_45"] == 424.3 and unknown["metrics"]["mae"] == 26.61816


def test_legacy_header_on_a_netlist(tmp_path: Path) -> None:
    text = LEGACY.format(name="mul2_old", mae="0.000000") + V_2x2.format(
        name="mul2_old", o0="A[0] & B[0]"
    )
    mult = from_netlist(_file(tmp_path, "mul2_old.v", text))
    assert mult.hardware["power_mw"] == 0.4287 and mult.hardware["area_um2"] == 662.0
    assert mult.provenance["header_unchecked"]["ep_pct"] == 86.5
    with pytest.raises(HeaderMismatch, match="mae: computed 0, header 1.5"):
        from_netlist(_file(tmp_path, "mul2_bad.v", text.replace("0.000000\n// MSE", "1.5\n// MSE")))


def test_gen_twin_grouped_with_its_c_model(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    _exact_c(root, "mul2u_g")
    _file(root, "mul2u_g_gen.v", V_2x2.format(name="mul2u_g_gen", o0="A[0] & B[0]"))
    _exact_c(root, "mul2u_h")
    _file(root, "mul2u_h_gen.v", V_2x2.format(name="mul2u_h_gen", o0="A[0] | B[0]"))
    _file(root, "add2u_s_gen.v", V_2x2.format(name="add2u_s_gen", o0="A[0] & B[0]"))
    report = import_library(root, tmp_path / "cat", workers=1, progress=False)
    assert [e["name"] for e in report.entries] == ["mul2u_g"]
    assert report.entries[0]["sources"] == ["mul2u_g.c", "mul2u_g_gen.v"]
    assert sorted(report.refused) == ["add2u_s", "mul2u_h"]
    text = "\n".join(report.problems)
    assert "mul2u_h: refused: mul2u_h_gen.v and mul2u_h.c disagree" in text
    assert "add2u_s_gen.v: NetlistError" in text and "named as an EvoApproxLib adder" in text


def test_errors_say_what_was_taken_from_the_name(tmp_path: Path) -> None:
    """A user's unsigned model that happens to be named like a signed EvoApproxLib circuit is
    refused, and the message says the signedness came from the name."""
    text = "#include <stdint.h>\nuint16_t approx_mul(uint8_t a, uint8_t b) { return a * b; }\n"
    path = _file(tmp_path, "mul4s_mine.c", text)
    with pytest.raises(ValueError, match="read as signed because the file is named like an"):
        from_c_source(path, 4)


def test_one_line_block_comments_are_read_as_the_line_comments() -> None:
    """EvoApprox8b's generated C files write the header as ``/*   Power  (45) = ... */``."""
    block = "".join(f"  /*   {line[3:]} */\n" for line in EVOAPPROX8B.splitlines())
    assert parse_evoapprox_header(block) == parse_evoapprox_header(EVOAPPROX8B)
