"""Rectangular multipliers (bits_a != bits_b): value object, formats, metrics, gradients."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from appmult_fx.luts.formats import load_multiplier, save_multiplier
from appmult_fx.luts.gradients import with_gradients
from appmult_fx.luts.metrics import evoapprox_metrics, metrics
from appmult_fx.luts.multiplier import Multiplier
from appmult_fx.luts.registry import multiplier


def _approx_8x4(signed: bool = False) -> Multiplier:
    """An 8x4 multiplier whose table is f(A, B) = A*B with the low bit cleared (our oracle)."""
    va = np.arange(256) - (128 if signed else 0)
    vb = np.arange(16) - (8 if signed else 0)
    va, vb = np.roll(va, -128 if signed else 0), np.roll(vb, -8 if signed else 0)  # index order
    table = (va[:, None] * vb[None, :]) & ~1
    return Multiplier("m8x4", (8, 4), signed, torch.from_numpy(table))


def test_widths_shape_product_and_repr() -> None:
    m = _approx_8x4()
    assert m.bits == (8, 4) and (m.bits_a, m.bits_b) == (8, 4) and not m.is_square
    assert tuple(m.table.shape) == (256, 16)
    assert m.operand_range_a == (0, 255) and m.operand_range_b == (0, 15)
    assert int(m.product(torch.tensor(255), torch.tensor(13))) == (255 * 13) & ~1
    assert "8x4u" in repr(m)
    with pytest.raises(ValueError, match="operand b out of range"):
        m.product(torch.tensor(3), torch.tensor(16))
    with pytest.raises(ValueError, match="operand_range_a / operand_range_b"):
        _ = m.operand_range
    assert Multiplier("sq", (4, 4), False, torch.zeros(16, 16, dtype=torch.long)).bits == 4
    with pytest.raises(ValueError, match=r"shape \(256, 16\)"):
        Multiplier("bad", (8, 4), False, torch.zeros(16, 256, dtype=torch.long))
    with pytest.raises(ValueError, match="bits must be"):
        Multiplier("bad", (8, 9), False, torch.zeros(256, 512, dtype=torch.long))


def test_signed_rectangular_product_and_exact() -> None:
    m = _approx_8x4(signed=True)
    a, b = torch.tensor([-128, 127, -3]), torch.tensor([-8, 7, 5])
    assert m.product(a, b).tolist() == [(x * y) & ~1 for x, y in zip(a.tolist(), b.tolist())]
    exact = multiplier("mul8x4s_exact")
    assert exact.bits == (8, 4) and exact.product(a, b).tolist() == (a * b).tolist()
    assert torch.equal(exact.exact_table(), exact.table.long())


def test_output_width_is_enforced_per_entry() -> None:
    table = multiplier("mul8x4u_exact").table.clone()
    table[200, 9] = 1 << 12  # one past the 12-bit output
    with pytest.raises(ValueError, match=r"table\[200\]\[9\] \(A=200, B=9\) = 4096"):
        Multiplier("too_wide", (8, 4), False, table)


def test_square_sha256_unchanged_and_rectangular_hash_has_both_widths() -> None:
    m = multiplier("mul8u_exact")
    h = hashlib.sha256(b"appmult-int bits=8 signed=0\n")  # version-1 recipe, written out
    h.update(m.table.numpy().astype("<i4").tobytes())
    h.update(m.grad_a.numpy().astype("<f4").tobytes())
    h.update(m.grad_b.numpy().astype("<f4").tobytes())
    assert m.sha256 == h.hexdigest()
    # a 4x8 and an 8x4 table holding the same bytes must not collide
    t = torch.arange(256 * 16).reshape(256, 16) % 7
    assert (
        Multiplier("x", (8, 4), False, t).sha256
        != Multiplier("y", (4, 8), False, t.reshape(16, 256)).sha256
    )


@pytest.mark.parametrize("signed", [False, True])
def test_round_trip_through_every_format(tmp_path: Path, signed: bool) -> None:
    m = with_gradients(_approx_8x4(signed), step=1 / 16).with_hardware(power_mw=0.13)
    back = load_multiplier(save_multiplier(m, tmp_path / "m.lut"))
    assert back.bits == (8, 4) and back.sha256 == m.sha256 and back.hardware == m.hardware
    for gradients in (False, True):
        path = tmp_path / f"m{int(gradients)}_lutfp.txt"
        from appmult_fx.luts.formats_seed import write_seed_text

        write_seed_text(m, path, gradients=gradients)
        text = path.read_text()
        assert "INFO: operand widths: bits_a=8, bits_b=4" in text
        back = load_multiplier(path)
        assert back.bits == (8, 4) and back.signed == signed
        assert torch.equal(back.table, m.table)
        if gradients:
            assert torch.equal(back.grad_a, m.grad_a) and torch.equal(back.grad_b, m.grad_b)
        # without the widths line the reader infers them from the distinct operand values
        path.write_text(text.replace("INFO: operand widths: bits_a=8, bits_b=4\n", ""))
        assert torch.equal(load_multiplier(path).table, m.table)
    with pytest.raises(ValueError, match="8x8-bit unsigned multipliers only.*8x4"):
        save_multiplier(m, tmp_path / "m.bin", format="tfapprox")


def test_rows_parse_independently_of_the_reader(tmp_path: Path) -> None:
    """The seed text of an 8x4 table read back by a tiny parser of the test's own."""
    m = _approx_8x4()
    path = save_multiplier(m, tmp_path / "m_lutfp.txt")
    rows = [line.split() for line in path.read_text().splitlines() if line[:1].isdigit()]
    assert len(rows) == 256 * 16
    assert all(int(v) == (int(a) * int(b)) & ~1 for a, b, v in rows)


def test_metrics_and_gradients_on_rectangular() -> None:
    m = _approx_8x4()
    va, vb = np.arange(256), np.arange(16)
    exact = va[:, None] * vb[None, :]
    err = exact - ((exact) & ~1)
    got = metrics(m)
    assert got["er"] == np.mean(err != 0) and got["med"] == err.mean()
    assert got["nmed"] == err.mean() / 4096 and got["wce"] == 1
    nz = exact != 0
    assert got["wcre"] == pytest.approx(np.max(err[nz] / exact[nz]))
    evo = evoapprox_metrics(m)
    assert evo["wce_pct"] == pytest.approx(100 / 4096) and evo["ep_pct"] == 100 * got["er"]
    for method in ("difference", "ste", "regression"):
        g = with_gradients(m, method=method)
        assert g.grad_a.shape == g.grad_b.shape == (256, 16)
    ste = with_gradients(m, method="ste")
    assert torch.equal(ste.grad_a[5], torch.arange(16).float())  # d(a*b)/da = b
    assert torch.equal(ste.grad_b[:, 3], torch.arange(256).float())  # d(a*b)/db = a
    with pytest.raises(ValueError, match="edge='row'.*square"):
        with_gradients(m, edge="row")


def test_from_function_rectangular() -> None:
    from appmult_fx.luts.user_defined import from_function

    m = from_function(lambda a, b: a * b + (a & 1), (6, 3))
    assert m.bits == (6, 3) and int(m.table[63, 7]) == 63 * 7 + 1
    s = from_function(lambda a, b: a * b if a > 0 else 0, (3, 5), signed=True)  # per pair
    assert int(s.product(torch.tensor(3), torch.tensor(-16))) == -48
    assert s.provenance["evaluation"] == "elementwise"


@pytest.mark.parametrize("signed", [False, True])
def test_rectangular_truncated_builtins(signed: bool) -> None:
    """``mul8x4u_trunc4``: partial products a_i b_j with i + j < 4 dropped, by a loop here."""
    m = multiplier(f"mul8x4{'s' if signed else 'u'}_trunc4")
    assert m.bits == (8, 4) and m.has_gradients and m.grad_a.shape == (256, 16)
    ia, ib = np.arange(256)[:, None], np.arange(16)[None, :]

    def weight(k: int, n: int) -> int:
        return -(1 << k) if signed and k == n - 1 else 1 << k

    table = sum(
        ((ia >> i) & 1) * ((ib >> j) & 1) * weight(i, 8) * weight(j, 4)
        for i in range(8)
        for j in range(4)
        if i + j >= 4
    )
    assert np.array_equal(m.table.numpy(), table)
    with pytest.raises(ValueError, match=r"k must be in \[1, 11\]"):
        multiplier("mul8x4u_trunc12")
