"""FP multiplier objects: generated tables vs ApproxTrain's files, files, functions, C sources."""

from __future__ import annotations

import pytest
import torch
from appmult_fx.luts.fp import FPMultiplier, from_fp_c_source, from_fp_function, load_bin, load_fp
from appmult_fx.luts.fp_files import bin_bytes

import appmult_fx as amx

SHIPPED = {
    "MBM_1": "fp_mbm1",
    "MBM_3": "fp_mbm3",
    "MBM_7": "fp_mbm7",
    "MIT_1": "fp_mit1",
    "MIT_5": "fp_mit5",
    "MIT_7": "fp_mit7",
    "ACC_7": "fp_trunc7",
}


@pytest.mark.parametrize("stem", sorted(SHIPPED))
def test_generated_tables_equal_approxtrain_files_byte_for_byte(shared, stem: str) -> None:
    path = shared / "approxtrain_luts" / f"{stem}.bin"
    mult = amx.multiplier(SHIPPED[stem])
    assert bin_bytes(mult.mantissa_table, mult.mantissa_bits) == path.read_bytes()
    loaded = load_bin(path)
    assert torch.equal(loaded.mantissa_table, mult.mantissa_table)
    assert loaded.sha256 == mult.sha256 and loaded.name == stem


def test_bin_and_npz_round_trip(tmp_path) -> None:
    for name in ("fp_mbm7", "fp_mit3", "fp_trunc7"):
        mult = amx.multiplier(name)
        out = mult.save(tmp_path / f"X_{mult.mantissa_bits}.bin")
        back = load_fp(out)
        assert back.save(tmp_path / "again.bin").read_bytes() == out.read_bytes()
        assert back.sha256 == mult.sha256
    wide = amx.multiplier("fp_mbm11").with_rounding("nearest")
    back = load_fp(wide.save(tmp_path / "wide.npz"))
    assert back.sha256 == wide.sha256 and back.name == "fp_mbm11" and back.rounding == "nearest"
    with pytest.raises(ValueError, match="m <= 7"):
        wide.save(tmp_path / "wide_11.bin")


def test_bad_bin_files_are_reported(tmp_path) -> None:
    (tmp_path / "odd.bin").write_bytes(b"\0" * 20)
    with pytest.raises(ValueError, match=r"odd\.bin: 20 bytes"):
        load_bin(tmp_path / "odd.bin")
    (tmp_path / "T_3.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="suffix says m = 3 but 16 bytes mean m = 2"):
        load_bin(tmp_path / "T_3.bin")
    (tmp_path / "S_2.bin").write_bytes(b"\0" * 5 + b"\x10" + b"\0" * 10)
    with pytest.raises(ValueError, match="offset 5 is 0x10"):
        load_bin(tmp_path / "S_2.bin")


def test_object_contract() -> None:
    mult = amx.multiplier("fp_mbm7")
    assert mult.kind == "fp" and mult.bits == 16 and mult.mantissa_bits == 7
    assert mult.mantissa_table.dtype == torch.int32 and mult.mantissa_table.shape == (128, 128)
    assert mult.provenance["family"] == "mbm"
    assert mult.sha256 != mult.with_rounding("nearest").sha256
    values = mult.mantissa_products()
    assert values.min() >= 1 and values.max() < 4
    for name in ("fp_mbm7", "fp_mbm5", "fp_mbm3", "fp_mbm1", "fp_mit7", "fp_mit1", "fp_trunc7"):
        assert name in amx.builtin_names()
    assert amx.multiplier("fp_trunc11").mantissa_table.shape == (2048, 2048)
    with pytest.raises(KeyError):
        amx.multiplier("fp_mbm12")
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        FPMultiplier("bad", 1, torch.full((2, 2), 4))


def test_mbm1_always_gives_mantissa_two() -> None:
    assert torch.all(amx.multiplier("fp_mbm1").mantissa_products() == 2.0)


def test_from_python_function_tensor_and_elementwise() -> None:
    m = 5
    exact = from_fp_function(lambda a, b: a * b, m, "exact5")
    assert torch.equal(exact.mantissa_table, amx.multiplier("fp_trunc5").mantissa_table)
    scalar = from_fp_function(lambda a, b: a * b, m, "exact5s", elementwise=True)
    assert torch.equal(scalar.mantissa_table, exact.mantissa_table)
    mitchell = from_fp_function(
        lambda a, b: torch.where(a + b - 2 >= 1, 2 * (a + b - 2), a + b - 1), m, "mit"
    )
    assert torch.equal(mitchell.mantissa_table, amx.multiplier("fp_mit5").mantissa_table)
    with pytest.raises(ValueError, match=r"outside \[1, 4\)"):
        from_fp_function(lambda a, b: a - b, 2, "bad")
    with pytest.raises(ValueError, match="elementwise=True"):
        from_fp_function(lambda a, b: 1.0, 2, "bad")


MITCHELL_C = r"""
#include <cstdint>
#include <cstring>
// Mitchell's FP multiplier on the operands' top 7 mantissa bits (ApproxTrain-style model)
float mitchell7(float a, float b) {
    uint32_t ua, ub; std::memcpy(&ua, &a, 4); std::memcpy(&ub, &b, 4);
    uint32_t trunc = 0x7F0000u;
    uint32_t s = (ua & trunc) + (ub & trunc);
    uint32_t carry = s >= (1u << 23);
    uint32_t frac = s & 0x7FFFFFu;
    uint32_t bits = ((127u + carry) << 23) | frac;
    float r; std::memcpy(&r, &bits, 4); return r;
}
"""


def test_from_c_source_reproduces_the_builtin(tmp_path) -> None:
    src = tmp_path / "mitchell.cpp"
    src.write_text(MITCHELL_C)
    mult = from_fp_c_source(src, "mitchell7", 7)
    assert torch.equal(mult.mantissa_table, amx.multiplier("fp_mit7").mantissa_table)
    assert mult.provenance["function"] == "mitchell7" and mult.name == "mitchell7_7"
    exact = from_fp_c_source("float mul(float a, float b) { return a * b; }", "mul", 3, "c_exact3")
    assert torch.equal(exact.mantissa_table, amx.multiplier("fp_trunc3").mantissa_table)
    with pytest.raises(RuntimeError, match="compiling"):
        from_fp_c_source("float broken(float a, float b) { return a * ; }", "broken", 2)
