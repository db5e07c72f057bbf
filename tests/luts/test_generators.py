"""Built-in generators: each table equals a direct scalar formula on every operand pair."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from appmult_fx.luts.formats import load_multiplier
from appmult_fx.luts.indexing import operand_values
from appmult_fx.luts.registry import builtin_names, multiplier

Widths = int | tuple[int, int]


def direct(bits: Widths, signed: bool, f: Callable[[int, int], int]) -> torch.Tensor:
    """``f`` on every pair of operand values, in table-index order (rows A, columns B)."""
    bits_a, bits_b = (bits, bits) if isinstance(bits, int) else bits
    va, vb = operand_values(bits_a, signed).tolist(), operand_values(bits_b, signed).tolist()
    return torch.tensor([[f(a, b) for b in vb] for a in va], dtype=torch.int64)


def bit(x: int, i: int) -> int:
    return (x >> i) & 1  # Python ints are two's complement with infinite sign extension


def weight(i: int, bits: int, signed: bool) -> int:
    return -(1 << i) if signed and i == bits - 1 else 1 << i


def kept_partial_products(bits: Widths, signed: bool, keep: Callable[[int, int], bool]):
    """Sum of the partial products a_i b_j w_i w_j with ``keep(i, j)`` (i: bit of A, j: of B)."""
    bits_a, bits_b = (bits, bits) if isinstance(bits, int) else bits

    def f(a: int, b: int) -> int:
        return sum(
            bit(a, i) * bit(b, j) * weight(i, bits_a, signed) * weight(j, bits_b, signed)
            for i in range(bits_a)
            for j in range(bits_b)
            if keep(i, j)
        )

    return f


def mitchell(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    sign = -1 if (a < 0) != (b < 0) else 1
    a, b = abs(a), abs(b)
    k1, k2 = a.bit_length() - 1, b.bit_length() - 1
    x1, x2 = Fraction(a, 2**k1) - 1, Fraction(b, 2**k2) - 1
    p = 2 ** (k1 + k2) * (1 + x1 + x2) if x1 + x2 < 1 else 2 ** (k1 + k2 + 1) * (x1 + x2)
    assert p.denominator == 1
    return sign * int(p)


def drum(k: int) -> Callable[[int, int], int]:
    def approx(m: int) -> int:
        s = m.bit_length() - k
        return ((m >> s) | 1) << s if s > 0 else m

    return lambda a, b: (-1 if (a < 0) != (b < 0) else 1) * approx(abs(a)) * approx(abs(b))


@pytest.mark.parametrize("bits", [2, 5, 8])
@pytest.mark.parametrize("signed", [False, True])
def test_exact_equals_product(bits: int, signed: bool) -> None:
    m = multiplier(f"mul{bits}{'s' if signed else 'u'}_exact")
    assert torch.equal(m.table.long(), direct(bits, signed, lambda a, b: a * b))


def keep_columns(h: int, v: int) -> Callable[[int, int], bool]:
    """Rows j >= h and columns i + j >= v (truncation: h = 0)."""
    return lambda i, j: j >= h and i + j >= v


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bits", [3, 6])
def test_partial_product_families(bits: int, signed: bool) -> None:
    s = "s" if signed else "u"
    for k in (1, bits - 1, bits, 2 * bits - 1):
        expected = direct(bits, signed, kept_partial_products(bits, signed, keep_columns(0, k)))
        assert torch.equal(multiplier(f"mul{bits}{s}_trunc{k}").table.long(), expected), k
    for h, v in ((1, bits), (2, 1), (0, 0)):
        expected = direct(bits, signed, kept_partial_products(bits, signed, keep_columns(h, v)))
        assert torch.equal(multiplier(f"mul{bits}{s}_bam{h}_{v}").table.long(), expected)
    exact = multiplier(f"mul{bits}{s}_exact").table
    assert torch.equal(multiplier(f"mul{bits}{s}_bam0_0").table, exact)


def truncated_by_modulo(k: int) -> Callable[[int, int], int]:
    """a*b minus its low k columns, sum_i a_i 2^i (b mod 2^(k-i)) (unsigned)."""
    return lambda a, b: a * b - sum(bit(a, i) * (1 << i) * (b % (1 << (k - i))) for i in range(k))


def test_unsigned_truncation_by_modular_formula() -> None:
    for k in (4, 8):
        expected = direct(8, False, truncated_by_modulo(k))
        assert torch.equal(multiplier(f"mul8u_trunc{k}").table.long(), expected)


def operand_truncation(t: int) -> Callable[[int, int], int]:
    return lambda a, b: (a >> t << t) * (b >> t << t)


@pytest.mark.parametrize("signed", [False, True])
def test_closed_form_families_8bit(signed: bool) -> None:
    s = "s" if signed else "u"
    for t in (1, 4):
        expected = direct(8, signed, operand_truncation(t))
        assert torch.equal(multiplier(f"mul8{s}_optrunc{t}").table.long(), expected)
    assert torch.equal(multiplier(f"mul8{s}_mitchell").table.long(), direct(8, signed, mitchell))
    for k in (3, 6):
        assert torch.equal(multiplier(f"mul8{s}_drum{k}").table.long(), direct(8, signed, drum(k)))


def test_small_widths_and_parameter_errors() -> None:
    assert torch.equal(multiplier("mul2s_mitchell").table.long(), direct(2, True, mitchell))
    assert torch.equal(multiplier("mul3u_drum2").table.long(), direct(3, False, drum(2)))
    for name, message in (
        ("mul8u_trunc16", r"k must be in \[1, 15\]"),
        ("mul4s_drum2", r"k must be in \[3, 3\]"),
        ("mul4u_optrunc4", r"t must be in \[1, 3\]"),
        ("mul4u_bam4_1", r"h must be in \[0, 3\]"),
    ):
        with pytest.raises(ValueError, match=message):
            multiplier(name)


def test_listed_names_build_with_gradients_and_fit_their_output_range() -> None:
    names = [n for n in builtin_names(rectangular=False) if n.startswith("mul")]
    families = {n.split("_", 1)[1].rstrip("0123456789_") for n in names}
    assert {"exact", "trunc", "bam", "optrunc", "mitchell", "drum"} <= families
    for bits in range(2, 9):
        for s in "us":
            assert f"mul{bits}{s}_mitchell" in names and f"mul{bits}{s}_trunc{bits}" in names
    for name in names:
        m = multiplier(name)
        assert m.name == name and m.has_gradients
        width = m.bits_a + m.bits_b
        lo, hi = (-(2 ** (width - 1)), 2 ** (width - 1) - 1) if m.signed else (0, 2**width - 1)
        assert lo <= int(m.table.min()) and int(m.table.max()) <= hi, name


def test_seed_vertical_truncation_equals_builtin_trunc(shared: Path) -> None:
    """The seed's Wallace-tree multipliers with k columns removed are our trunc<k>."""
    for folder, name, k in (("mult6u", "6_6", 4), ("mult7u", "7_7", 6)):
        path = next((shared / "appmults" / "vert_trunc" / folder).glob("*_lutfp.txt"))
        assert name in path.name
        seed = load_multiplier(path)
        assert np.array_equal(seed.table, multiplier(f"mul{seed.bits}u_trunc{k}").table)
