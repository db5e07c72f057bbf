"""The ``appmult`` FP LUT-GEMM custom ops: schemas, fake kernels, dispatch, autograd.

* ``appmult::fp_bmm(a f32[B,M,K], b f32[B,K,N], mantissa_table i32[2**m,2**m], rounding)
  -> f32[B,M,N]``: operands cast to (1, 8, m) (``rounding`` = ``"truncate"`` or
  ``"nearest"``), every product read through the mantissa table, float32 accumulation
  sequential over k (:mod:`.fp_reference` defines the result bit for bit).
* ``appmult::fp_approx_bmm(a, b, mantissa_table, rounding, backward) -> f32[B,M,N]``: the same
  forward, differentiable. ``backward="approximate"`` computes both gradient GEMMs with the
  same FP LUT product (``dA = G @~ B^T``, ``dB = A^T @~ G``, ApproxTrain's behaviour);
  ``backward="exact"`` uses ``torch.bmm`` on the float32 operands (straight-through the cast).

``fp_bmm``'s body is the pure-PyTorch reference; the compiled CPU and CUDA FP kernels are
registered per device with torch.library (:mod:`.dispatch`; ``APPMULT_FX_REFERENCE=1`` or
:func:`.dispatch.use_reference` keeps the reference everywhere). Layer-level
functions (``fp_linear``, ``fp_conv1d``, ``fp_conv2d``, ``fp_matmul``) live in
:mod:`.fp_layers`.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from ..luts.fp_format import MAX_MANTISSA_BITS, ROUNDINGS
from . import fp_kernels, fp_reference
from .checks import float32_message
from .dispatch import register_device_kernels

BACKWARDS = ("approximate", "exact")


def mantissa_bits_of(table: Tensor) -> int:
    """m of a ``[2**m, 2**m]`` mantissa table."""
    return table.shape[0].bit_length() - 1


def _check_table(table: Tensor) -> None:
    sizes = tuple(1 << m for m in range(1, MAX_MANTISSA_BITS + 1))
    torch._check(
        table.dim() == 2 and table.shape[0] == table.shape[1] and table.shape[0] in sizes,
        lambda: (
            f"expected a mantissa table of shape (2**m, 2**m), m in 1..{MAX_MANTISSA_BITS}, "
            f"got {tuple(table.shape)}"
        ),
    )
    torch._check(
        table.dtype == torch.int32, lambda: f"expected an int32 mantissa table, got {table.dtype}"
    )


def _check_operands(a: Tensor, b: Tensor, table: Tensor, rounding: str) -> None:
    torch._check(
        a.dim() == 3 and b.dim() == 3,
        lambda: f"expected a [B,M,K] and b [B,K,N], got {tuple(a.shape)} and {tuple(b.shape)}",
    )
    torch._check(
        a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1],
        lambda: f"batch/inner dimensions differ: a {tuple(a.shape)}, b {tuple(b.shape)}",
    )
    torch._check(
        a.dtype == torch.float32 and b.dtype == torch.float32,
        lambda: float32_message(a, b),
    )
    torch._check(a.device == b.device, lambda: f"a on {a.device} but b on {b.device}")
    torch._check(
        rounding in ROUNDINGS, lambda: f"expected rounding in {ROUNDINGS}, got {rounding!r}"
    )
    _check_table(table)


def _fp_bmm(impl, a: Tensor, b: Tensor, mantissa_table: Tensor, rounding: str) -> Tensor:  # noqa: ANN001
    _check_operands(a, b, mantissa_table, rounding)
    m = mantissa_bits_of(mantissa_table)
    table = mantissa_table.to(a.device).contiguous()
    return impl.fp_bmm(a.contiguous(), b.contiguous(), table, m, rounding)


@torch.library.custom_op("appmult::fp_bmm", mutates_args=())
def fp_bmm(a: Tensor, b: Tensor, mantissa_table: Tensor, rounding: str) -> Tensor:
    """Batched FP LUT-GEMM ``Y = SUM_k AM(a[:, :, k], b[:, k, :])`` (float32, sequential k)."""
    return _fp_bmm(fp_reference, a, b, mantissa_table, rounding)


def _compiled_fp_bmm(a: Tensor, b: Tensor, mantissa_table: Tensor, rounding: str) -> Tensor:
    return _fp_bmm(fp_kernels.backend_for(a.device), a, b, mantissa_table, rounding)


register_device_kernels(
    fp_bmm, partial(_fp_bmm, fp_reference), cpu=_compiled_fp_bmm, cuda=_compiled_fp_bmm
)


@fp_bmm.register_fake
def _fp_bmm_fake(a: Tensor, b: Tensor, mantissa_table: Tensor, rounding: str) -> Tensor:
    _check_operands(a, b, mantissa_table, rounding)
    return a.new_empty((a.shape[0], a.shape[1], b.shape[2]))


def _check_backward(backward: str) -> None:
    torch._check(
        backward in BACKWARDS, lambda: f"expected backward in {BACKWARDS}, got {backward!r}"
    )


@torch.library.custom_op("appmult::fp_approx_bmm", mutates_args=())
def fp_approx_bmm(
    a: Tensor, b: Tensor, mantissa_table: Tensor, rounding: str, backward: str
) -> Tensor:
    """Differentiable :func:`fp_bmm`; ``backward`` is ``"approximate"`` or ``"exact"``."""
    _check_backward(backward)
    return fp_bmm(a, b, mantissa_table, rounding)


@fp_approx_bmm.register_fake
def _fp_approx_bmm_fake(
    a: Tensor, b: Tensor, mantissa_table: Tensor, rounding: str, backward: str
) -> Tensor:
    _check_operands(a, b, mantissa_table, rounding)
    _check_backward(backward)
    return a.new_empty((a.shape[0], a.shape[1], b.shape[2]))


def _setup(ctx, inputs, output) -> None:  # noqa: ANN001
    a, b, table, rounding, backward = inputs
    ctx.rounding = rounding
    ctx.backward = backward
    ctx.save_for_backward(a, b, table)


def _backward(ctx, g: Tensor):  # noqa: ANN001, ANN202
    a, b, table = ctx.saved_tensors
    g = g.contiguous()
    da = db = None
    if ctx.backward == "approximate":
        if ctx.needs_input_grad[0]:
            da = fp_bmm(g, b.transpose(1, 2).contiguous(), table, ctx.rounding)
        if ctx.needs_input_grad[1]:
            db = fp_bmm(a.transpose(1, 2).contiguous(), g, table, ctx.rounding)
    else:
        if ctx.needs_input_grad[0]:
            da = torch.bmm(g, b.transpose(1, 2))
        if ctx.needs_input_grad[1]:
            db = torch.bmm(a.transpose(1, 2), g)
    return da, db, None, None, None


fp_approx_bmm.register_autograd(_backward, setup_context=_setup)
