"""Functional models of FP mantissa multipliers and their tabulation into mantissa tables.

A model maps the 23-bit mantissa fields ``x1, x2`` of two operands (fixed point, 23
fractional bits, int64 tensors) to the *unnormalised* product ``v`` of ``1.x1 * 1.x2`` with
23 fractional bits (``2**23 <= v < 2**25``). Tabulation evaluates it on ``1.i x 1.j`` for every
pair of m-bit mantissa codes and normalises: ``v >= 2**24`` gives ``carry = 1`` and
``f = (v >> 1) mod 2**23``, else ``carry = 0`` and ``f = v mod 2**23``; the entry is
``carry << m | f >> (23 - m)``. Built-in models (definitions from ApproxTrain's C models):
Mitchell's logarithmic multiplier, the minimally biased multiplier (MBM) and the exact
product of truncated operands ("truncated bfloat16" for m = 7).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .fp_format import check_mantissa_bits

Model = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

ONE = 1 << 23
MBM_CORRECTION = 655360  # (2**-4 + 2**-6) * 2**23


def _trunc_mask(m: int) -> int:
    return ((1 << m) - 1) << (23 - m)


def mitchell_model(x1: torch.Tensor, x2: torch.Tensor, m: int) -> torch.Tensor:
    """Mitchell: ``1 + x1 + x2``, or ``2 * (x1 + x2)`` when the fraction sum carries."""
    s = (x1 & _trunc_mask(m)) + (x2 & _trunc_mask(m))
    carry = (s >= ONE).to(torch.int64)
    return (ONE + (s % ONE)) << carry


def mbm_model(x1: torch.Tensor, x2: torch.Tensor, m: int) -> torch.Tensor:
    """Minimally biased multiplier: lowest kept bit forced to 1, plus a bias correction.

    The correction ``(655360 >> carry) & TRUNC`` is ApproxTrain's m = 7 / m = 5 rule; for
    m <= 3 the mask removes it entirely, matching their "no correction" case, so one rule
    covers every m.
    """
    lsb = 1 << (23 - m)
    s = ((x1 & _trunc_mask(m)) | lsb) + ((x2 & _trunc_mask(m)) | lsb)
    carry = (s >= ONE).to(torch.int64)
    sc = (s % ONE) + ((MBM_CORRECTION >> carry) & _trunc_mask(m))
    # ApproxTrain resets Sc to S here; only S mod 2**23 survives the normalisation, so keep that
    sc = torch.where((carry == 1) & (sc >= ONE), s % ONE, sc)
    return (ONE + sc) << carry


def truncated_model(x1: torch.Tensor, x2: torch.Tensor, m: int) -> torch.Tensor:
    """Exact product of the truncated operands, truncated to 23 fractional bits."""
    a = ONE + (x1 & _trunc_mask(m))
    b = ONE + (x2 & _trunc_mask(m))
    return (a * b) >> 23


MODELS: dict[str, Model] = {"mbm": mbm_model, "mit": mitchell_model, "trunc": truncated_model}


def mantissa_grid(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 23-bit fields of ``1.i`` (rows) and ``1.j`` (columns) for all m-bit codes (int64)."""
    check_mantissa_bits(m)
    codes = torch.arange(1 << m, dtype=torch.int64) << (23 - m)
    return codes[:, None].expand(1 << m, 1 << m), codes[None, :].expand(1 << m, 1 << m)


def entries_from_unnormalised(v: torch.Tensor, m: int) -> torch.Tensor:
    """Table entries (int32, ``carry << m | mantissa``) from unnormalised products ``v``."""
    bad = (v < ONE) | (v >= 4 * ONE)
    if bool(bad.any()):
        i, j = (int(t) for t in bad.nonzero()[0])
        raise ValueError(
            f"mantissa product for codes ({i}, {j}) is {int(v[i, j])} / 2**23, "
            "outside [1, 4): the model is not a mantissa multiplier"
        )
    carry = (v >= 2 * ONE).to(torch.int64)
    f = (v >> carry) % ONE
    return ((carry << m) | (f >> (23 - m))).to(torch.int32)


def tabulate_model(model: Model, m: int) -> torch.Tensor:
    """The ``[2**m, 2**m]`` mantissa table of a functional model."""
    x1, x2 = mantissa_grid(m)
    return entries_from_unnormalised(model(x1, x2, m), m)


def entries_from_products(products: torch.Tensor, m: int) -> torch.Tensor:
    """Table entries from float32 products of ``1.i x 1.j`` (must lie in [1, 4); truncated)."""
    p = products.to(torch.float32).contiguous()
    bits = p.view(torch.int32).to(torch.int64)
    exponent = (bits >> 23) & 0xFF
    ok = torch.isfinite(p) & (p > 0) & ((exponent == 127) | (exponent == 128))
    if not bool(ok.all()):
        i, j = (int(t) for t in (~ok).nonzero()[0])
        raise ValueError(
            f"f({1 + i / 2**m!r}, {1 + j / 2**m!r}) = {float(p[i, j])!r} (mantissa indices "
            f"{i}, {j} of {2**m}) is outside [1, 4): "
            "an FP mantissa multiplier must map [1, 2) x [1, 2) into [1, 4)"
        )
    v = (ONE + (bits & (ONE - 1))) << (exponent - 127)
    return entries_from_unnormalised(v, m)


def operand_grid(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 operands ``1.i`` (rows) and ``1.j`` (columns) for all m-bit codes."""
    x1, x2 = mantissa_grid(m)
    as_float = lambda x: ((127 << 23) | x).to(torch.int32).view(torch.float32)  # noqa: E731
    return as_float(x1.contiguous()), as_float(x2.contiguous())
