"""The integer approximate multiplier (AppMult) value object."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .indexing import (
    check_widths,
    operand_range,
    operand_values,
    output_range,
    value_to_index,
    widths_label,
)
from .lut_file_writer import write_lut_file

HARDWARE_KEYS: dict[str, type | tuple[type, ...]] = {
    "power_mw": (int, float),
    "area_um2": (int, float),
    "delay_ns": (int, float),
    "cells": int,
    "source": str,
}


def check_hardware(figures: Any, name: str) -> dict[str, Any]:
    """Validate a multiplier's hardware figures (see :data:`HARDWARE_KEYS`); return a copy."""
    if not isinstance(figures, dict):
        raise ValueError(f"{name}: hardware must be a dict or None, got {type(figures).__name__}")
    out: dict[str, Any] = {}
    for key, value in figures.items():
        kind = HARDWARE_KEYS.get(key)
        if kind is None:
            raise ValueError(
                f"{name}: unknown hardware figure {key!r}; expected one of {sorted(HARDWARE_KEYS)}"
            )
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"{name}: hardware figure {key}={value!r} has the wrong type")
        if key != "source" and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: hardware figure {key}={value!r} must be finite and >= 0")
        out[key] = value
    return out


def _as_table(t: Any, shape: tuple[int, int], what: str, dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(t)
    if tuple(t.shape) != shape:
        a, b = (n.bit_length() - 1 for n in shape)
        raise ValueError(
            f"{what} must have shape {shape} for {a}x{b} bits (2**bits_a rows of operand A, "
            f"2**bits_b columns of operand B), got {tuple(t.shape)}"
        )
    if dtype == torch.int32:
        if t.is_floating_point() or t.is_complex():
            raise ValueError(f"{what} must hold integers, got dtype {t.dtype}")
        t64 = t.to(torch.int64)
        if t64.numel() and (t64.min() < -(2**31) or t64.max() >= 2**31):
            raise ValueError(f"{what} values must fit in int32")
    return t.detach().to(dtype).contiguous().clone()


def _check_output_width(
    name: str, table: torch.Tensor, bits_a: int, bits_b: int, signed: bool
) -> None:
    """Refuse products that the ``bits_a + bits_b`` output wires cannot hold."""
    lo, hi = output_range(bits_a, bits_b, signed)
    bad = torch.nonzero((table < lo) | (table > hi))
    if bad.numel():
        i, j = (int(x) for x in bad[0])
        va, vb = (int(operand_values(w, signed)[k]) for w, k in ((bits_a, i), (bits_b, j)))
        raise ValueError(
            f"{name}: table[{i}][{j}] (A={va}, B={vb}) = {int(table[i, j])} does not fit the "
            f"{bits_a + bits_b}-bit {'signed' if signed else 'unsigned'} output [{lo}, {hi}] "
            f"({bad.shape[0]} such entries)"
            + (
                "; a signed multiplier's table holds the two's-complement value of its output "
                "bits, not the raw code"
                if signed
                else ""
            )
        )


@dataclass(frozen=True, eq=False)
class Multiplier:
    """An integer approximate multiplier given by its lookup table.

    ``bits`` is an int (square) or a pair ``(bits_a, bits_b)`` (rectangular; a pair of equal
    widths becomes the int). ``table[i, j] = f(A=a, B=b)``: rows ``i`` index operand A (the
    activation, ``2**bits_a`` rows), columns ``j`` operand B (the weight, ``2**bits_b``
    columns); see :mod:`.indexing` for how signed values map to indices. Every entry must fit
    the ``bits_a + bits_b``-bit output (two's complement when signed). ``grad_a`` / ``grad_b``
    are the optional gradient LUTs (d product / d A, d product / d B) used by LUT-gradient
    retraining. ``provenance`` records where the table came from (free-form key/values).
    """

    name: str
    bits: int | tuple[int, int]
    signed: bool
    table: torch.Tensor
    grad_a: torch.Tensor | None = None
    grad_b: torch.Tensor | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        bits_a, bits_b = check_widths(self.bits)
        object.__setattr__(self, "bits", bits_a if bits_a == bits_b else (bits_a, bits_b))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a multiplier needs a non-empty name")
        object.__setattr__(self, "signed", bool(self.signed))
        shape = (1 << bits_a, 1 << bits_b)
        object.__setattr__(self, "table", _as_table(self.table, shape, "table", torch.int32))
        _check_output_width(self.name, self.table, bits_a, bits_b, self.signed)
        if (self.grad_a is None) != (self.grad_b is None):
            raise ValueError("grad_a and grad_b must be given together (or neither)")
        for g in ("grad_a", "grad_b"):
            if getattr(self, g) is not None:
                t = _as_table(getattr(self, g), shape, g, torch.float32)
                if not torch.isfinite(t).all():
                    raise ValueError(f"{g} must be finite")
                object.__setattr__(self, g, t)
        object.__setattr__(self, "provenance", dict(self.provenance))
        if self.hardware is not None:
            object.__setattr__(self, "hardware", check_hardware(self.hardware, self.name))

    @property
    def kind(self) -> str:
        """``"int"`` for integer AppMults (FP multipliers say ``"fp"``)."""
        return "int"

    @property
    def has_gradients(self) -> bool:
        """Whether gradient LUTs are attached."""
        return self.grad_a is not None

    @property
    def is_square(self) -> bool:
        """Whether both operands have the same width (``bits`` is then an int)."""
        return isinstance(self.bits, int)

    @property
    def bits_a(self) -> int:
        """Width of operand A, the row operand (the activation side)."""
        return self.bits if isinstance(self.bits, int) else self.bits[0]

    @property
    def bits_b(self) -> int:
        """Width of operand B, the column operand (the weight side)."""
        return self.bits if isinstance(self.bits, int) else self.bits[1]

    @property
    def operand_range_a(self) -> tuple[int, int]:
        """Smallest and largest value of operand A (rows)."""
        return operand_range(self.bits_a, self.signed)

    @property
    def operand_range_b(self) -> tuple[int, int]:
        """Smallest and largest value of operand B (columns)."""
        return operand_range(self.bits_b, self.signed)

    @property
    def operand_range(self) -> tuple[int, int]:
        """Smallest and largest operand value of a square multiplier (both operands)."""
        if not self.is_square:
            raise ValueError(
                f"{self.name} is a rectangular {self.bits_a}x{self.bits_b} multiplier: its "
                "operands have different ranges; use operand_range_a / operand_range_b"
            )
        return self.operand_range_a

    @property
    def output_range(self) -> tuple[int, int]:
        """The values the ``bits_a + bits_b`` output bits can hold (every table entry does)."""
        return output_range(self.bits_a, self.bits_b, self.signed)

    @property
    def sha256(self) -> str:
        """Content hash over the widths, signedness, the table and the gradient tables.

        Square multipliers hash ``bits=<n>`` (unchanged since version 1 of the LUT files),
        rectangular ones ``bits=<a>x<b>``."""
        h = hashlib.sha256()
        h.update(f"appmult-int bits={self.widths} signed={int(self.signed)}\n".encode())
        h.update(self.table.numpy().astype("<i4").tobytes())
        if self.grad_a is not None and self.grad_b is not None:
            h.update(self.grad_a.numpy().astype("<f4").tobytes())
            h.update(self.grad_b.numpy().astype("<f4").tobytes())
        return h.hexdigest()

    def exact_table(self) -> torch.Tensor:
        """The exact product table of the same operand format (int64)."""
        va = operand_values(self.bits_a, self.signed)
        vb = operand_values(self.bits_b, self.signed)
        return va[:, None] * vb[None, :]

    def product(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Elementwise approximate product of integer operand values (broadcasting)."""
        a = torch.as_tensor(a)
        b = torch.as_tensor(b)
        for name, t, bits in (("a", a, self.bits_a), ("b", b, self.bits_b)):
            lo, hi = operand_range(bits, self.signed)
            if t.is_floating_point():
                raise TypeError(f"operand {name} must be an integer tensor, got {t.dtype}")
            if t.numel() and (t.min() < lo or t.max() > hi):
                raise ValueError(
                    f"operand {name} out of range [{lo}, {hi}] for {self.name} "
                    f"({'signed' if self.signed else 'unsigned'} {bits}-bit operand {name})"
                )
        flat = self.table.reshape(-1).to(torch.int64)
        ia, ib = value_to_index(a, self.bits_a), value_to_index(b, self.bits_b)
        return flat.to(a.device)[ia * (1 << self.bits_b) + ib]

    def renamed(self, name: str) -> Multiplier:
        """A copy under another name."""
        return replace(self, name=name)

    def with_gradient_tables(
        self, grad_a: torch.Tensor, grad_b: torch.Tensor, **provenance: Any
    ) -> Multiplier:
        """A copy with the given gradient LUTs (and provenance entries added)."""
        return replace(
            self, grad_a=grad_a, grad_b=grad_b, provenance={**self.provenance, **provenance}
        )

    def with_hardware(self, **figures: Any) -> Multiplier:
        """A copy whose :attr:`hardware` figures are updated with ``figures``.

        Known keys: ``power_mw``, ``area_um2``, ``delay_ns`` (non-negative finite numbers),
        ``cells`` (a gate/cell count, int) and ``source`` (free text); see :data:`HARDWARE_KEYS`.
        """
        return replace(self, hardware={**(self.hardware or {}), **figures})

    def save(self, path: str | Path) -> Path:
        """Write the multiplier in the project's own LUT format (see :mod:`.formats`)."""
        return write_lut_file(self, path)

    def __repr__(self) -> str:
        sign = "s" if self.signed else "u"
        grads = "+grad" if self.has_gradients else ""
        return f"Multiplier({self.name!r}, {self.widths}{sign}{grads}, sha256={self.sha256[:12]})"

    @property
    def widths(self) -> str:
        """``"8"`` for a square 8-bit multiplier, ``"8x4"`` for a rectangular one."""
        return widths_label(self.bits_a, self.bits_b)
