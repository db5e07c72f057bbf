"""A scalar, pure-Python bit-level model of the FP LUT product (the oracle for the FP tests).

Written from the semantics in docs/fp.md, independently of luts/fp_format.py.
"""

from __future__ import annotations

import struct

NAN = 0x7FC00000
INF = 0x7F800000


def f2u(x: float) -> int:
    """float32 bit pattern of ``x``."""
    return struct.unpack("<I", struct.pack("<f", x))[0]


def u2f(u: int) -> float:
    """float32 value of a bit pattern."""
    return struct.unpack("<f", struct.pack("<I", u))[0]


def cast(u: int, m: int, rounding: str = "truncate") -> int:
    """Cast a float32 bit pattern to (1, 8, m)."""
    sign, mag = u & 0x80000000, u & 0x7FFFFFFF
    if mag > INF:
        return NAN
    if mag == INF:
        return u
    if mag < (1 << 23):
        return sign
    shift = 23 - m
    kept, low = mag >> shift, mag & ((1 << shift) - 1)
    if rounding == "nearest":
        half = 1 << (shift - 1)
        if low > half or (low == half and kept & 1):
            kept += 1
    return sign | (kept << shift)  # a rounding carry into exponent 255 gives exactly inf


def product(ua: int, ub: int, table: list[list[int]], m: int, rounding: str = "truncate") -> int:
    """Bit pattern of the LUT product of two float32 bit patterns."""
    a, b = cast(ua, m, rounding), cast(ub, m, rounding)
    if a == NAN or b == NAN:
        return NAN
    sign = (a ^ b) & 0x80000000
    ea, eb = (a >> 23) & 0xFF, (b >> 23) & 0xFF
    if ea == 255 or eb == 255:
        return NAN if 0 in (ea, eb) else sign | INF
    if ea == 0 or eb == 0:
        return sign
    shift = 23 - m
    entry = table[(a >> shift) & ((1 << m) - 1)][(b >> shift) & ((1 << m) - 1)]
    carry, mant = entry >> m, entry & ((1 << m) - 1)
    e = ea + eb - 127 + carry
    if e >= 255:
        return sign | INF
    if e <= 0:
        return sign
    return sign | (e << 23) | (mant << shift)
