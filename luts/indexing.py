"""The one definition of how operand values index a multiplier table.

A ``bits_a x bits_b`` multiplier table has ``2**bits_a`` rows (operand A, the activation) and
``2**bits_b`` columns (operand B, the weight): ``table[a][b] = f(A=a, B=b)``. Square
multipliers have ``bits_a == bits_b``. Every helper here takes the width of ONE operand.
Row/column *index* ``i`` holds the operand whose two's-complement bit pattern is ``i``:

* unsigned operands: value ``v`` in ``[0, 2**bits - 1]`` has index ``v``;
* signed operands: value ``v`` in ``[-2**(bits-1), 2**(bits-1) - 1]`` has index
  ``v mod 2**bits`` (so ``-1`` is index ``2**bits - 1``), the convention of TorchApprox
  (``(uint8)a << 8 | (uint8)b``) and of hardware.

Kernels only ever see indices (``uint8``), never signedness.
"""

from __future__ import annotations

import torch

MIN_BITS = 2
MAX_BITS = 8


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is a supported integer operand width, else raise ValueError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return bits


def check_widths(bits: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``(bits_a, bits_b)`` of a width given as an int (square) or a pair; else ValueError."""
    if isinstance(bits, (tuple, list)):
        if len(bits) != 2:
            raise ValueError(f"bits must be an int or a pair (bits_a, bits_b), got {bits!r}")
        return check_bits(bits[0]), check_bits(bits[1])
    b = check_bits(bits)  # type: ignore[arg-type]
    return b, b


def widths_label(bits_a: int, bits_b: int) -> str:
    """``"8"`` for square 8-bit operands, ``"8x4"`` for 8-bit A x 4-bit B: how names, tables
    and reports write operand widths."""
    return f"{bits_a}" if bits_a == bits_b else f"{bits_a}x{bits_b}"


def output_range(bits_a: int, bits_b: int, signed: bool) -> tuple[int, int]:
    """The values the ``bits_a + bits_b`` output wires of a multiplier can hold."""
    width = check_bits(bits_a) + check_bits(bits_b)
    if signed:
        return -(1 << (width - 1)), (1 << (width - 1)) - 1
    return 0, (1 << width) - 1


def operand_range(bits: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest operand value of a ``bits``-bit (un)signed multiplier."""
    check_bits(bits)
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def operand_values(bits: int, signed: bool) -> torch.Tensor:
    """The operand value of every table index ``0 .. 2**bits - 1`` (int64 tensor)."""
    check_bits(bits)
    idx = torch.arange(1 << bits, dtype=torch.int64)
    if signed:
        idx = torch.where(idx >= (1 << (bits - 1)), idx - (1 << bits), idx)
    return idx


def value_to_index(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Table index of each operand value (two's-complement low ``bits`` bits), as int64."""
    return torch.bitwise_and(values.to(torch.int64), (1 << bits) - 1)


def codes_to_indices(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Kernel-ready ``uint8`` indices of integer-valued codes (any dtype, float included).

    Codes must already be integers in ``[-2**15, 2**15)`` (quantizer output is at most 8 bits
    wide): they go through int16, whose two's-complement low bits are the index. This runs on
    every LUT-GEMM call (forward and backward) over the whole im2col matrix, so it avoids int64
    temporaries (13x faster than round + int64 on a 9.4 M-code conv input); the int16 -> uint8
    conversion keeps the low 8 bits, so only narrower operands need a mask (on the bytes)."""
    indices = codes.to(torch.int16).to(torch.uint8)
    return indices.bitwise_and_((1 << bits) - 1) if bits < 8 else indices
