"""Built-in approximate multiplier families, as tables over every operand pair.

Operand bits use two's-complement weights: ``w_i = 2**i``, except ``w_(n-1) = -2**(n-1)``
for signed operands, so ``a * b = sum_(i,j) a_i b_j w_i w_j`` (the partial-product array).
Names are ``mul<widths><u|s>_<family><params>`` (:mod:`.registry`): operand A (rows) has
``a`` bits and B (columns) ``b`` bits; square multipliers have ``a = b = n`` and the ranges
below reduce to the square ones (``a + b - 1 = 2n - 1``, ``min = max = n``):

* ``trunc<k>``   truncated multiplier: drop the partial products of the ``k`` least
  significant columns (``i + j < k``, ``i`` a bit of A, ``j`` of B), 1 <= k <= a+b-1;
* ``bam<h>_<v>`` broken-array multiplier: keep ``a_i b_j`` only for rows ``j >= h`` (``h``
  counts bits of B) and columns ``i + j >= v`` (h = 0 and v = k is ``trunc<k>``),
  0 <= h <= b-1, 0 <= v <= a+b-1;
* ``optrunc<t>`` operand truncation: zero the ``t`` low bits of *both* operands, then multiply
  exactly (signed: two's complement, i.e. rounding towards minus infinity),
  1 <= t <= min(a, b)-1, so that every operand keeps at least its top bit;
* ``mitchell``   Mitchell's logarithmic multiplier on magnitudes (sign applied after):
  ``a = 2**k1 (1 + x1)``, ``b = 2**k2 (1 + x2)``, product ``2**(k1+k2) (1 + x1 + x2)`` if
  ``x1 + x2 < 1`` else ``2**(k1+k2+1) (x1 + x2)`` - an integer, no rounding needed; no
  parameter, any widths;
* ``drum<k>``    DRUM (dynamic range unbiased): an operand magnitude with more than ``k``
  significant bits keeps its ``k`` leading bits, the lowest kept bit forced to 1, lower bits
  zero; then exact multiplication, sign applied after. One ``k`` for both operands (a narrow
  operand with at most ``k`` significant bits stays exact), 2 <= k <= max(a, b)-1 so that at
  least the wider operand is approximated (signed: 3 <= k, so that the product of two most
  negative operands stays within the ``a + b`` output bits).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .indexing import check_widths, operand_values, widths_label


def _values(bits: int, signed: bool) -> np.ndarray:
    return operand_values(bits, signed).numpy().astype(np.int64)


def _check(name: str, value: int, lo: int, hi: int, bits: int | tuple[int, int]) -> int:
    if not lo <= value <= hi:
        widths = widths_label(*check_widths(bits))
        empty = " (none: these widths admit no valid value)" if lo > hi else ""
        raise ValueError(
            f"{name} must be in [{lo}, {hi}] for {widths}-bit operands{empty}, got {value}"
        )
    return value


def _weighted_bits(bits: int, signed: bool) -> np.ndarray:
    """``[N, n]``: bit ``i`` of each operand times its two's-complement weight."""
    values = _values(bits, signed)
    bit = (values[:, None] >> np.arange(bits)[None, :]) & 1  # arithmetic shift: 2's complement
    weight = 1 << np.arange(bits, dtype=np.int64)
    if signed:
        weight[-1] = -weight[-1]
    return bit * weight[None, :]


def partial_product_table(
    bits: int | tuple[int, int], signed: bool, keep: np.ndarray
) -> np.ndarray:
    """Sum of the partial products ``a_i b_j w_i w_j`` with ``keep[i, j]`` true (``bits``: an
    int, or ``(bits_a, bits_b)`` for a rectangular ``[2**bits_a, 2**bits_b]`` table)."""
    bits_a, bits_b = check_widths(bits)
    return _weighted_bits(bits_a, signed) @ keep.astype(np.int64) @ _weighted_bits(bits_b, signed).T


def truncated_table(bits: int | tuple[int, int], signed: bool, k: int) -> np.ndarray:
    """Truncated multiplier: drop the ``k`` least-significant partial-product columns."""
    return broken_array_table(bits, signed, 0, _check("k", k, 1, sum(check_widths(bits)) - 1, bits))


def broken_array_table(bits: int | tuple[int, int], signed: bool, h: int, v: int) -> np.ndarray:
    """Broken-array multiplier: keep rows ``j >= h`` (bits of B) and columns ``i + j >= v``."""
    bits_a, bits_b = check_widths(bits)
    _check("h", h, 0, bits_b - 1, bits)
    _check("v", v, 0, bits_a + bits_b - 1, bits)
    i, j = np.meshgrid(np.arange(bits_a), np.arange(bits_b), indexing="ij")
    return partial_product_table(bits, signed, (j >= h) & (i + j >= v))


def operand_truncation_table(bits: int | tuple[int, int], signed: bool, t: int) -> np.ndarray:
    """Zero the ``t`` low bits of both operands, then multiply exactly."""
    bits_a, bits_b = check_widths(bits)
    mask = ~((1 << _check("t", t, 1, min(bits_a, bits_b) - 1, bits)) - 1)
    return (_values(bits_a, signed) & mask)[:, None] * (_values(bits_b, signed) & mask)[None, :]


def _leading_one(m: np.ndarray) -> np.ndarray:
    """Position of the most significant 1 of each positive int (0 for 0)."""
    return np.where(m > 0, np.floor(np.log2(np.maximum(m, 1))).astype(np.int64), 0)


def _sign_magnitude(
    bits: int | tuple[int, int],
    signed: bool,
    magnitude_product: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    bits_a, bits_b = check_widths(bits)
    va, vb = _values(bits_a, signed), _values(bits_b, signed)
    product = magnitude_product(np.abs(va)[:, None], np.abs(vb)[None, :])
    return product * (np.sign(va)[:, None] * np.sign(vb)[None, :])


def _mitchell_magnitudes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.broadcast_arrays(a, b)
    k1, k2 = _leading_one(a), _leading_one(b)
    fa = (a - (1 << k1)) << k2  # x1 * 2**(k1+k2)
    fb = (b - (1 << k2)) << k1  # x2 * 2**(k1+k2)
    base = np.int64(1) << (k1 + k2)
    product = np.where(fa + fb < base, base + fa + fb, 2 * (fa + fb))
    return np.where((a == 0) | (b == 0), 0, product)


def mitchell_table(bits: int | tuple[int, int], signed: bool) -> np.ndarray:
    """Mitchell's logarithmic multiplier (magnitudes; sign applied after)."""
    return _sign_magnitude(bits, signed, _mitchell_magnitudes)


def drum_operand(m: np.ndarray, k: int) -> np.ndarray:
    """DRUM's approximation of magnitudes ``m``: k leading bits, lowest kept bit set."""
    shift = np.maximum(_leading_one(m) - k + 1, 0)
    return np.where(shift > 0, ((m >> shift) | 1) << shift, m)


def drum_table(bits: int | tuple[int, int], signed: bool, k: int) -> np.ndarray:
    """DRUM-k (dynamic range unbiased multiplier; magnitudes, sign applied after)."""
    _check("k", k, 3 if signed else 2, max(check_widths(bits)) - 1, bits)
    return _sign_magnitude(bits, signed, lambda a, b: drum_operand(a, k) * drum_operand(b, k))


def listed_parameters(family: str, bits: int | tuple[int, int], signed: bool) -> list[str]:
    """Name suffixes listed by ``appmult-fx lut list`` (any valid parameter also works).

    Square ``n`` bits: ``trunc{n//2, n}``, ``bam{1_n//2, 2_n}``, ``optrunc{1, n//2}``,
    ``mitchell``, ``drum{3, 4, 6}``; rectangular widths use ``n = (a+b)//2`` for the
    column-based families (trunc, bam), ``min(a, b)`` for optrunc and ``max(a, b)`` for drum,
    each kept only where valid."""
    bits_a, bits_b = check_widths(bits)
    n = (bits_a + bits_b) // 2
    if family == "trunc":
        return [f"trunc{k}" for k in sorted({n // 2, n}) if k >= 1]
    if family == "bam":
        return [f"bam{h}_{v}" for h, v in ((1, n // 2), (2, n)) if h <= bits_b - 1]
    if family == "optrunc":
        narrow = min(bits_a, bits_b)
        return [f"optrunc{t}" for t in sorted({1, narrow // 2}) if t <= narrow - 1]
    if family == "mitchell":
        return ["mitchell"]
    if family == "drum":
        wide = max(bits_a, bits_b)
        return [f"drum{k}" for k in (3, 4, 6) if (3 if signed else 2) <= k <= wide - 1]
    raise ValueError(f"unknown family {family!r}")
