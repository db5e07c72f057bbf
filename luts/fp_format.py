"""The reduced floating-point format (1 sign, 8 exponent, m mantissa bits) and its LUT product.

Everything here works on the IEEE-754 float32 bit patterns (``x.view(torch.int32)``), so the
results are exact and identical on every device. The semantics (see ``docs/fp.md``):

* **operand cast** to (1, 8, m): the low ``23 - m`` mantissa bits are dropped (``"truncate"``,
  ApproxTrain's behaviour) or rounded to nearest, ties to even (``"nearest"``; a carry may
  reach the exponent and overflow to inf). float32 denormals flush to a zero of the same sign;
  infinities stay; every NaN becomes the canonical quiet NaN ``0x7FC00000``.
* **product** of two cast operands: sign = sign_a XOR sign_b; if either is NaN, or one is inf
  and the other zero, the result is NaN; else if either is inf, a signed inf; else if either is
  zero, an exact signed zero; else with ``entry = table[mant_a, mant_b]`` (``carry << m |
  mantissa``) the exponent is ``e = e_a + e_b - 127 + carry``; ``e >= 255`` overflows to a
  signed inf and ``e <= 0`` (underflow, denormal results) flushes to a signed zero.
"""

from __future__ import annotations

import torch

MIN_MANTISSA_BITS = 1
MAX_MANTISSA_BITS = 11
ROUNDINGS = ("truncate", "nearest")
CANONICAL_NAN_BITS = 0x7FC00000
_EXP_MASK = 0x7F800000
_MAG_MASK = 0x7FFFFFFF
_SIGN_BIT = -(2**31)  # 0x80000000 as int32


def check_mantissa_bits(m: int) -> int:
    """Validate a mantissa width (1..11) and return it."""
    if (
        isinstance(m, bool)
        or not isinstance(m, int)
        or not MIN_MANTISSA_BITS <= m <= MAX_MANTISSA_BITS
    ):
        raise ValueError(
            f"mantissa bits must be an int in {MIN_MANTISSA_BITS}..{MAX_MANTISSA_BITS}, got {m!r}"
        )
    return m


def check_rounding(rounding: str) -> str:
    """Validate an operand rounding mode (``"truncate"`` or ``"nearest"``) and return it."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return rounding


def _bits(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32:
        raise TypeError(f"expected a float32 tensor, got {x.dtype}")
    return x.contiguous().view(torch.int32)


def cast_bits(bits: torch.Tensor, m: int, rounding: str = "truncate") -> torch.Tensor:
    """Cast float32 bit patterns (int32) to the (1, 8, m) format; returns int32 bit patterns."""
    check_mantissa_bits(m)
    check_rounding(rounding)
    sign = bits & _SIGN_BIT
    mag = bits & _MAG_MASK
    shift = 23 - m
    is_nan = mag > _EXP_MASK
    is_inf = mag == _EXP_MASK
    is_denormal = mag < (1 << 23)  # zero or denormal: flush to signed zero
    if rounding == "nearest" and shift > 0:
        half_minus_one = (1 << (shift - 1)) - 1
        mag = mag + half_minus_one + ((mag >> shift) & 1)  # may carry into the exponent (-> inf)
    mag = mag & -(1 << shift)
    mag = torch.where(is_denormal, torch.zeros_like(mag), mag)
    mag = torch.where(is_inf, torch.full_like(mag, _EXP_MASK), mag)
    out = sign | mag
    return torch.where(is_nan, torch.full_like(out, CANONICAL_NAN_BITS), out)


def cast_to_format(x: torch.Tensor, m: int, rounding: str = "truncate") -> torch.Tensor:
    """float32 ``x`` cast to the (1, 8, m) format (values stay float32)."""
    return cast_bits(_bits(x), m, rounding).view(torch.float32)


def product_bits(
    abits: torch.Tensor, bbits: torch.Tensor, table: torch.Tensor, m: int
) -> torch.Tensor:
    """LUT product of operands already cast to (1, 8, m), as float32 bit patterns (int32).

    ``table`` is the int32 ``[2**m, 2**m]`` mantissa table (``carry << m | mantissa``).
    Broadcasts ``abits`` against ``bbits``.
    """
    shift = 23 - m
    sign = (abits ^ bbits) & _SIGN_BIT
    ea = (abits >> 23) & 0xFF
    eb = (bbits >> 23) & 0xFF
    ma = (abits >> shift) & ((1 << m) - 1)
    mb = (bbits >> shift) & ((1 << m) - 1)
    entry = table.reshape(-1)[((ma << m) | mb).to(torch.int64)]
    e = ea + eb - 127 + (entry >> m)
    mant = (entry & ((1 << m) - 1)) << shift
    normal = sign | (e.clamp(0, 255) << 23) | mant
    zero = ea == 0
    zero_b = eb == 0
    inf_a = ea == 255
    inf_b = eb == 255
    any_zero = zero | zero_b
    any_inf = inf_a | inf_b
    out = torch.where(e >= 255, sign | _EXP_MASK, normal)
    out = torch.where(e <= 0, sign, out)
    out = torch.where(any_zero, sign, out)
    out = torch.where(any_inf, sign | _EXP_MASK, out)
    nan = ((abits & _MAG_MASK) > _EXP_MASK) | ((bbits & _MAG_MASK) > _EXP_MASK)
    nan = nan | (any_inf & any_zero)
    return torch.where(nan, torch.full_like(out, CANONICAL_NAN_BITS), out)


def fp_product(
    a: torch.Tensor, b: torch.Tensor, table: torch.Tensor, m: int, rounding: str = "truncate"
) -> torch.Tensor:
    """Elementwise approximate product of float32 tensors (broadcasting), float32 result."""
    check_mantissa_bits(m)
    table = table.to(device=a.device, dtype=torch.int32)
    abits = cast_bits(_bits(a), m, rounding)
    bbits = cast_bits(_bits(b), m, rounding)
    return product_bits(abits, bbits, table, m).view(torch.float32)
