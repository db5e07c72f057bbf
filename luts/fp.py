"""Floating-point approximate multipliers (ApproxTrain-style mantissa LUTs).

An :class:`FPMultiplier` multiplies float32 numbers in the (1 sign, 8 exponent, m mantissa)
format: the operands are cast to the format, the product mantissa (and its carry) is read from
a ``2**m x 2**m`` table, the exponents are added (semantics in :mod:`.fp_format` and
``docs/fp.md``). Built-ins ``fp_mbm<m>``, ``fp_mit<m>``, ``fp_trunc<m>`` (m = 1..11) are
generated from the functional models in :mod:`.fp_models` and registered here with the
multiplier registry, so ``multiplier("fp_mbm7")`` works.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import fp_files
from .fp_format import (
    MAX_MANTISSA_BITS,
    cast_to_format,
    check_mantissa_bits,
    check_rounding,
    fp_product,
)
from .fp_models import MODELS, entries_from_products, operand_grid, tabulate_model
from .registry import register_family


def _as_mantissa_table(t: Any, m: int) -> torch.Tensor:
    t = torch.as_tensor(t)
    n = 1 << m
    if tuple(t.shape) != (n, n):
        raise ValueError(
            f"mantissa table must have shape ({n}, {n}) for m = {m}, got {tuple(t.shape)}"
        )
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"mantissa table must hold integers, got dtype {t.dtype}")
    t64 = t.to(torch.int64)
    if t64.numel() and (t64.min() < 0 or t64.max() >= (2 << m)):
        raise ValueError(
            f"mantissa table entries must be carry << {m} | mantissa, i.e. in [0, {2 << m}), "
            f"got values in [{int(t64.min())}, {int(t64.max())}]"
        )
    return t.detach().to(torch.int32).contiguous().clone()


@dataclass(frozen=True, eq=False)
class FPMultiplier:
    """An FP approximate multiplier over the (1, 8, m) format, given by its mantissa table.

    ``mantissa_table[i, j]`` (int32) is ``carry << m | mantissa`` of the product of ``1.i``
    (first operand, the activation) and ``1.j`` (second operand, the weight); for m = 7 it
    equals ApproxTrain's byte with the carry moved from bit 7 to bit m. ``rounding`` is how
    float32 operands are cast to the format (``"truncate"`` like ApproxTrain, or
    ``"nearest"``, ties to even).
    """

    name: str
    mantissa_bits: int
    mantissa_table: torch.Tensor
    rounding: str = "truncate"
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_mantissa_bits(self.mantissa_bits)
        check_rounding(self.rounding)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a multiplier needs a non-empty name")
        table = _as_mantissa_table(self.mantissa_table, self.mantissa_bits)
        object.__setattr__(self, "mantissa_table", table)
        object.__setattr__(self, "provenance", dict(self.provenance))

    @property
    def kind(self) -> str:
        """``"fp"`` (integer AppMults say ``"int"``)."""
        return "fp"

    @property
    def bits(self) -> int:
        """Total width of the format: 1 + 8 + m."""
        return 9 + self.mantissa_bits

    @property
    def sha256(self) -> str:
        """Content hash over m, the rounding mode and the mantissa table."""
        h = hashlib.sha256()
        h.update(f"appmult-fp m={self.mantissa_bits} rounding={self.rounding}\n".encode())
        h.update(self.mantissa_table.numpy().astype("<i4").tobytes())
        return h.hexdigest()

    def cast(self, x: torch.Tensor) -> torch.Tensor:
        """float32 ``x`` cast to this multiplier's operand format."""
        return cast_to_format(x, self.mantissa_bits, self.rounding)

    def product(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Elementwise approximate product of float32 tensors (broadcasting)."""
        return fp_product(a, b, self.mantissa_table, self.mantissa_bits, self.rounding)

    def mantissa_products(self) -> torch.Tensor:
        """The table as values: ``(1 + mantissa / 2**m) * 2**carry`` (float64, in [1, 4))."""
        m = self.mantissa_bits
        t = self.mantissa_table.to(torch.int64)
        return (1 + (t & ((1 << m) - 1)).double() / (1 << m)) * (1 << (t >> m)).double()

    def renamed(self, name: str) -> FPMultiplier:
        """A copy under another name."""
        return replace(self, name=name)

    def with_rounding(self, rounding: str) -> FPMultiplier:
        """A copy that casts operands with ``rounding`` (``"truncate"`` or ``"nearest"``)."""
        return replace(self, rounding=rounding)

    def save(self, path: str | Path) -> Path:
        """Write ``NAME_<m>.bin`` (ApproxTrain, m <= 7) or ``.npz`` (own format, any m)."""
        return fp_files.save_fp(self, path)

    def __repr__(self) -> str:
        return (
            f"FPMultiplier({self.name!r}, (1,8,{self.mantissa_bits}), {self.rounding}, "
            f"sha256={self.sha256[:12]})"
        )


def generated_multiplier(family: str, m: int) -> FPMultiplier:
    """The built-in ``fp_<family><m>`` (family ``mbm``, ``mit`` or ``trunc``) from its model."""
    if family not in MODELS:
        raise ValueError(
            f"unknown FP multiplier family {family!r}; expected one of {sorted(MODELS)}"
        )
    table = tabulate_model(MODELS[family], check_mantissa_bits(m))
    prov = {
        "source": "builtin",
        "family": family,
        "generator": f"luts.fp_models.{MODELS[family].__name__}",
    }
    return FPMultiplier(f"fp_{family}{m}", m, table, "truncate", prov)


def from_fp_function(
    fn: Callable[[Any, Any], Any], mantissa_bits: int, name: str, *, elementwise: bool = False
) -> FPMultiplier:
    """Tabulate a mantissa multiplier given as a Python function over ``1.i x 1.j``.

    By default ``fn(a, b)`` receives two broadcast float32 tensors (``[2**m, 1]`` and
    ``[1, 2**m]``) and returns their products; with ``elementwise=True`` it is called once
    per pair with Python floats. Results must lie in [1, 4); they are truncated to m bits.
    """
    m = check_mantissa_bits(mantissa_bits)
    a, b = operand_grid(m)
    if elementwise:
        products = torch.tensor(
            [
                [float(fn(float(x), float(y))) for x, y in zip(ra, rb, strict=True)]
                for ra, rb in zip(a, b, strict=True)
            ],
            dtype=torch.float32,
        )
    else:
        products = torch.as_tensor(fn(a[:, :1], b[:1, :]))
        if tuple(products.shape) != (1 << m, 1 << m):
            raise ValueError(
                f"fn must return a {(1 << m, 1 << m)} tensor for broadcast operands, got shape "
                f"{tuple(products.shape)} (use elementwise=True for scalar functions)"
            )
    table = entries_from_products(products, m)
    prov = {"source": "python-function", "function": getattr(fn, "__qualname__", repr(fn))}
    return FPMultiplier(name, m, table, "truncate", prov)


def from_fp_c_source(
    source: str | Path,
    function: str,
    mantissa_bits: int,
    name: str | None = None,
    *,
    compiler: str = "c++",
) -> FPMultiplier:
    """Compile a C/C++ ``float function(float, float)`` and tabulate it over ``1.i x 1.j``.

    ``source`` is a path to a ``.c``/``.cpp`` file or the source text itself. This is
    ApproxTrain's flow for user multipliers: only the mantissa behaviour is captured.
    """
    from .fp_csource import tabulate_c_function

    m = check_mantissa_bits(mantissa_bits)
    products, prov = tabulate_c_function(source, function, m, compiler)
    table = entries_from_products(products, m)
    return FPMultiplier(name or f"{function}_{m}", m, table, "truncate", prov)


def load_bin(path: str | Path, m: int | None = None, name: str | None = None) -> FPMultiplier:
    """Read an ApproxTrain ``NAME_<m>.bin`` table (1 byte per entry, a outer, carry in bit 7)."""
    path = Path(path)
    table, m = fp_files.read_bin(path, m)
    prov = {
        "source": "approxtrain-bin",
        "file": path.name,
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    return FPMultiplier(name or path.stem, m, table, "truncate", prov)


def load_fp(path: str | Path) -> FPMultiplier:
    """Read an FP multiplier from ``.bin`` (ApproxTrain) or ``.npz`` (own format) by suffix."""
    path = Path(path)
    if path.suffix == ".bin":
        return load_bin(path)
    if path.suffix == ".npz":
        return FPMultiplier(**fp_files.read_npz(path))
    raise ValueError(f"{path}: expected an FP multiplier file ending in .bin or .npz")


_FAMILY_NAMES = {"mbm": (7, 5, 3, 1), "mit": (7, 5, 3, 1), "trunc": (7,)}

register_family(
    rf"fp_(mbm|mit|trunc)([1-9]|1[0-{MAX_MANTISSA_BITS - 10}])",
    lambda mt: generated_multiplier(mt.group(1), int(mt.group(2))),  # type: ignore[arg-type,return-value]
    lambda: [f"fp_{f}{m}" for f, ms in _FAMILY_NAMES.items() for m in ms],
)

__all__ = [
    "FPMultiplier",
    "from_fp_c_source",
    "from_fp_function",
    "generated_multiplier",
    "load_bin",
    "load_fp",
]
