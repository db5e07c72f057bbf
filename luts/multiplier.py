"""The integer approximate multiplier (AppMult) value object."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .indexing import check_bits, operand_range, operand_values, value_to_index


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


def _as_table(t: Any, bits: int, what: str, dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(t)
    n = 1 << bits
    if tuple(t.shape) != (n, n):
        raise ValueError(f"{what} must have shape ({n}, {n}) for {bits} bits, got {tuple(t.shape)}")
    if dtype == torch.int32:
        if t.is_floating_point() or t.is_complex():
            raise ValueError(f"{what} must hold integers, got dtype {t.dtype}")
        t64 = t.to(torch.int64)
        if t64.numel() and (t64.min() < -(2**31) or t64.max() >= 2**31):
            raise ValueError(f"{what} values must fit in int32")
    return t.detach().to(dtype).contiguous().clone()


@dataclass(frozen=True, eq=False)
class Multiplier:
    """An integer approximate multiplier given by its lookup table.

    ``table[i, j]`` is the product of the operands with table indices ``i`` (first operand,
    the activation) and ``j`` (second operand, the weight); see :mod:`.indexing` for how
    signed values map to indices. ``grad_a`` / ``grad_b`` are the optional gradient LUTs
    (d product / d first operand, d product / d second operand) used by LUT-gradient
    retraining. ``provenance`` records where the table came from (free-form key/values).
    """

    name: str
    bits: int
    signed: bool
    table: torch.Tensor
    grad_a: torch.Tensor | None = None
    grad_b: torch.Tensor | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_bits(self.bits)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a multiplier needs a non-empty name")
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "table", _as_table(self.table, self.bits, "table", torch.int32))
        if (self.grad_a is None) != (self.grad_b is None):
            raise ValueError("grad_a and grad_b must be given together (or neither)")
        for g in ("grad_a", "grad_b"):
            if getattr(self, g) is not None:
                t = _as_table(getattr(self, g), self.bits, g, torch.float32)
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
    def operand_range(self) -> tuple[int, int]:
        """Smallest and largest operand value."""
        return operand_range(self.bits, self.signed)

    @property
    def sha256(self) -> str:
        """Content hash over bits, signedness, the table and the gradient tables."""
        h = hashlib.sha256()
        h.update(f"appmult-int bits={self.bits} signed={int(self.signed)}\n".encode())
        h.update(self.table.numpy().astype("<i4").tobytes())
        if self.grad_a is not None and self.grad_b is not None:
            h.update(self.grad_a.numpy().astype("<f4").tobytes())
            h.update(self.grad_b.numpy().astype("<f4").tobytes())
        return h.hexdigest()

    def exact_table(self) -> torch.Tensor:
        """The exact product table of the same operand format (int64)."""
        v = operand_values(self.bits, self.signed)
        return v[:, None] * v[None, :]

    def product(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Elementwise approximate product of integer operand values (broadcasting)."""
        a = torch.as_tensor(a)
        b = torch.as_tensor(b)
        lo, hi = self.operand_range
        for name, t in (("a", a), ("b", b)):
            if t.is_floating_point():
                raise TypeError(f"operand {name} must be an integer tensor, got {t.dtype}")
            if t.numel() and (t.min() < lo or t.max() > hi):
                raise ValueError(
                    f"operand {name} out of range [{lo}, {hi}] for {self.name} "
                    f"({'signed' if self.signed else 'unsigned'} {self.bits}-bit)"
                )
        n = 1 << self.bits
        flat = self.table.reshape(-1).to(torch.int64)
        ia, ib = value_to_index(a, self.bits), value_to_index(b, self.bits)
        return flat.to(a.device)[ia * n + ib]

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

    @property
    def bits_a(self) -> int:
        """Width of the row operand (the activation side)."""
        return self.bits

    @property
    def bits_b(self) -> int:
        """Width of the column operand (the weight side)."""
        return self.bits

    def with_hardware(self, **figures: Any) -> Multiplier:
        """A copy whose :attr:`hardware` figures are updated with ``figures``.

        Known keys: ``power_mw``, ``area_um2``, ``delay_ns`` (non-negative finite numbers),
        ``cells`` (a gate/cell count, int) and ``source`` (free text); see :data:`HARDWARE_KEYS`.
        """
        return replace(self, hardware={**(self.hardware or {}), **figures})

    def save(self, path: str | Path) -> Path:
        """Write the multiplier in the project's own LUT format (see :mod:`.formats`)."""
        from .formats import save_multiplier

        return save_multiplier(self, path)

    def __repr__(self) -> str:
        sign = "s" if self.signed else "u"
        grads = "+grad" if self.has_gradients else ""
        return f"Multiplier({self.name!r}, {self.bits}{sign}{grads}, sha256={self.sha256[:12]})"
