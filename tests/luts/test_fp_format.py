"""The FP LUT product and operand cast equal the scalar bit-level oracle, bit for bit."""

from __future__ import annotations

import random

import pytest
import torch
from appmult_fx.luts.fp import generated_multiplier
from appmult_fx.luts.fp_format import cast_to_format, check_mantissa_bits, fp_product

from .fp_oracle import INF, NAN, cast, f2u, product

SPECIALS = [
    0x00000000,
    0x80000000,
    INF,
    0x80000000 | INF,
    NAN,
    0x7F800001,
    0xFFC12345,
    0x00000001,
    0x807FFFFF,
    0x00800000,
    0x7F7FFFFF,
    0xFF7FFFFF,
    f2u(1.0),
    f2u(-1.5),
    f2u(3.0e38),
    f2u(1.0e-38),
    f2u(2.0**-63),
    f2u(2.0**64),
]


def _bits(values: list[int]) -> torch.Tensor:
    return torch.tensor([v - (1 << 32) if v >= 1 << 31 else v for v in values], dtype=torch.int32)


def _as_u32(t: torch.Tensor) -> list[int]:
    return [v & 0xFFFFFFFF for v in t.view(torch.int32).reshape(-1).tolist()]


def _check_pairs(mult, ua: list[int], ub: list[int]) -> None:
    a, b = _bits(ua).view(torch.float32), _bits(ub).view(torch.float32)
    got = _as_u32(mult.product(a, b))
    table = mult.mantissa_table.tolist()
    want = [
        product(x, y, table, mult.mantissa_bits, mult.rounding) for x, y in zip(ua, ub, strict=True)
    ]
    bad = [
        (hex(x), hex(y), hex(g), hex(w))
        for x, y, g, w in zip(ua, ub, got, want, strict=True)
        if g != w
    ]
    assert not bad, f"{len(bad)} mismatches, first {bad[:5]}"


@pytest.mark.parametrize("name", ["fp_mbm7", "fp_mit5", "fp_trunc7", "fp_mbm3"])
def test_every_mantissa_pair_over_exponent_and_sign_sweep(name: str) -> None:
    mult = generated_multiplier(name[3:-1], int(name[-1]))
    m, rng = mult.mantissa_bits, random.Random(1)
    # exponent pairs: ordinary, overflow / underflow boundaries (with and without carry), extremes
    exps = [
        (127, 127),
        (1, 1),
        (254, 254),
        (64, 63),
        (63, 64),
        (191, 191),
        (190, 191),
        (1, 254),
        (127 + 127, 128),
        (120, 8),
        (100, 30),
    ]
    ua, ub = [], []
    for i in range(1 << m):
        for j in range(1 << m):
            ea, eb = exps[(i * 7 + j) % len(exps)]
            low_a, low_b = rng.getrandbits(23 - m), rng.getrandbits(23 - m)  # dropped by the cast
            sa, sb = rng.getrandbits(1) << 31, rng.getrandbits(1) << 31
            ua.append(sa | ea << 23 | i << (23 - m) | low_a)
            ub.append(sb | eb << 23 | j << (23 - m) | low_b)
    _check_pairs(mult, ua, ub)


def test_all_exponent_pairs_for_a_few_mantissas() -> None:
    mult = generated_multiplier("mbm", 7)
    ua, ub = [], []
    for ea in range(0, 256, 3):
        for eb in range(0, 256, 5):
            ua.append((ea << 23) | (0x55 << 16))
            ub.append(0x80000000 | (eb << 23) | (0x7F << 16) | 0xFFFF)
    _check_pairs(mult, ua, ub)


def test_special_values_against_everything() -> None:
    mult = generated_multiplier("mit", 7)
    rng = random.Random(2)
    pool = SPECIALS + [rng.getrandbits(32) for _ in range(40)]
    ua = [x for x in pool for _ in pool]
    ub = [y for _ in pool for y in pool]
    _check_pairs(mult, ua, ub)


def test_specials_have_the_documented_meaning() -> None:
    mult = generated_multiplier("mbm", 7)
    inf, nan = float("inf"), float("nan")
    a = torch.tensor([0.0, -0.0, inf, inf, nan, 3.0e38, 1.0e-30, 1e-39, -2.0])
    b = torch.tensor([-5.0, -7.0, -2.0, 0.0, 1.0, 3.0e38, 1.0e-30, 1.0, 0.0])
    p = mult.product(a, b)
    assert p[0] == 0 and torch.signbit(p[0])  # +0 * -5 = -0 exactly (ApproxTrain: not exact)
    assert p[1] == 0 and not torch.signbit(p[1])
    assert p[2] == -inf and torch.isnan(p[3]) and torch.isnan(p[4])
    assert p[5] == inf  # overflow
    assert p[6] == 0 and p[7] == 0  # underflow and denormal operand flush to zero
    assert p[8] == 0 and torch.signbit(p[8])


@pytest.mark.parametrize("m", [1, 4, 7, 11])
def test_nearest_rounding_cast_matches_oracle(m: int) -> None:
    rng = random.Random(m)
    shift = 23 - m
    pool = SPECIALS + [rng.getrandbits(32) for _ in range(3000)]
    # exact ties (odd and even kept part) and the carry into the exponent / into inf
    pool += [
        (e << 23) | (k << shift) | (1 << (shift - 1)) for e in (1, 127, 254) for k in (0, 1, 2, 3)
    ]
    pool += [0x7F7FFFFF, 0x3FFFFFFF, 0xBF7FFFFF]
    for rounding in ("truncate", "nearest"):
        got = _as_u32(cast_to_format(_bits(pool).view(torch.float32), m, rounding))
        assert got == [cast(u, m, rounding) for u in pool]
    mult = generated_multiplier("trunc", m).with_rounding("nearest")
    _check_pairs(mult, pool[:500], list(reversed(pool))[:500])


def test_nearest_cast_of_max_float_overflows_to_inf() -> None:
    x = torch.tensor([3.4028234e38, -3.4028234e38])
    assert torch.equal(cast_to_format(x, 7, "nearest"), torch.tensor([float("inf"), -float("inf")]))
    assert torch.all(torch.isfinite(cast_to_format(x, 7, "truncate")))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="mantissa bits"):
        check_mantissa_bits(12)
    with pytest.raises(ValueError, match="rounding"):
        cast_to_format(torch.ones(2), 7, "up")
    with pytest.raises(TypeError, match="float32"):
        fp_product(
            torch.ones(2, dtype=torch.float64),
            torch.ones(2),
            torch.zeros(2, 2, dtype=torch.int32),
            1,
        )
