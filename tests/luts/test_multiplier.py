"""The Multiplier value object and the signed-indexing convention."""

import pytest
import torch
from appmult_fx.luts.indexing import codes_to_indices, operand_range, operand_values, value_to_index
from appmult_fx.luts.multiplier import Multiplier

import appmult_fx as amx


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("signed", [False, True])
def test_exact_builtins_are_exact(bits: int, signed: bool) -> None:
    m = amx.multiplier(f"mul{bits}{'s' if signed else 'u'}_exact")
    lo, hi = operand_range(bits, signed)
    a = torch.arange(lo, hi + 1)
    a, b = torch.meshgrid(a, a, indexing="ij")
    assert torch.equal(m.product(a, b), a * b)
    assert (m.bits, m.signed) == (bits, signed)
    # exact gradient tables: d(ab)/da = b, d(ab)/db = a, at the operands' table indices
    ia, ib = value_to_index(a, bits), value_to_index(b, bits)
    assert torch.equal(m.grad_a[ia, ib], b.float())
    assert torch.equal(m.grad_b[ia, ib], a.float())


def test_signed_indexing_is_twos_complement() -> None:
    assert operand_values(3, True).tolist() == [0, 1, 2, 3, -4, -3, -2, -1]
    assert value_to_index(torch.tensor([-4, -1, 0, 3]), 3).tolist() == [4, 7, 0, 3]
    idx = codes_to_indices(torch.tensor([-128.0, -1.0, 0.0, 127.0]), 8)
    assert idx.dtype == torch.uint8 and idx.tolist() == [128, 255, 0, 127]


def test_product_rejects_out_of_range_and_float() -> None:
    m = amx.multiplier("mul4s_exact")
    with pytest.raises(ValueError, match="out of range"):
        m.product(torch.tensor([8]), torch.tensor([1]))
    with pytest.raises(TypeError, match="integer"):
        m.product(torch.tensor([1.0]), torch.tensor([1]))


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        Multiplier("x", 3, False, torch.zeros(4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="bits"):
        Multiplier("x", 9, False, torch.zeros(512, 512, dtype=torch.int64))
    with pytest.raises(ValueError, match="integers"):
        Multiplier("x", 2, False, torch.zeros(4, 4))
    with pytest.raises(ValueError, match="together"):
        Multiplier("x", 2, False, torch.zeros(4, 4, dtype=torch.int64), grad_a=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="finite"):
        Multiplier(
            "x",
            2,
            False,
            torch.zeros(4, 4, dtype=torch.int64),
            torch.full((4, 4), float("nan")),
            torch.zeros(4, 4),
        )
    with pytest.raises(KeyError, match="unknown built-in"):
        amx.multiplier("mul9u_exact")


def test_sha256_depends_on_content_only() -> None:
    t = torch.arange(16).reshape(4, 4)
    a = Multiplier("a", 2, False, t)
    b = Multiplier("b", 2, False, t.clone())
    c = Multiplier("c", 2, False, t + (torch.arange(16).reshape(4, 4) == 5).long())
    assert a.sha256 == b.sha256 != c.sha256
    small = torch.arange(16).reshape(4, 4) % 8  # fits both the signed and unsigned output
    assert Multiplier("s", 2, True, small).sha256 != Multiplier("u", 2, False, small).sha256
    assert a.renamed("z").sha256 == a.sha256 and a.renamed("z").name == "z"


def test_table_is_copied_not_shared() -> None:
    t = torch.arange(16).reshape(4, 4)
    m = Multiplier("a", 2, False, t)
    t[0, 0] = 99
    assert m.table[0, 0] == 0


def test_hardware_figures_validated_and_kept_through_lut_file(tmp_path):
    m = amx.multiplier("mul8u_exact")
    assert m.hardware is None
    hw = m.with_hardware(power_mw=0.391, area_um2=710.0, source="test")
    assert hw.hardware == {"power_mw": 0.391, "area_um2": 710.0, "source": "test"}
    assert hw.sha256 == m.sha256  # figures are metadata, not table content
    assert amx.load_multiplier(hw.save(tmp_path / "m.lut")).hardware == hw.hardware
    with pytest.raises(ValueError, match="unknown hardware figure 'watts'"):
        m.with_hardware(watts=1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        m.with_hardware(power_mw=float("nan"))
    with pytest.raises(ValueError, match="wrong type"):
        m.with_hardware(power_mw="0.3")
