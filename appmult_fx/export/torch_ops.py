"""Frozen inference ops that stand for one approximate layer each while a model is exported.

* ``appmult_export::lut_conv(x, w, x_scale, x_zero_point, w_scale, w_zero_point, bias?,
  table, strides, pads, dilations, group, bits_a, bits_b, signed, multiplier,
  multiplier_sha256, layer)``
* ``appmult_export::lut_linear(x, w, x_scale, x_zero_point, w_scale, w_zero_point, bias?,
  table, bits_a, bits_b, signed, multiplier, multiplier_sha256, layer)``
* ``appmult_export::lut_matmul(a, b, a_scale, a_zero_point, b_scale, b_zero_point, table,
  bits_a, bits_b, signed, multiplier, multiplier_sha256, layer)``: ``torch.matmul`` of two
  activations (both at least 2-D, batch dimensions broadcast)

``w`` holds the integer weight codes (``uint8`` unsigned, ``int8`` signed), zero points are
``int32``, scales ``float32`` (``w_*`` per tensor or per output channel). ``pads`` follow the
ONNX order ``[begin_1, ..., begin_d, end_1, ..., end_d]`` (zero padding of the float input).
``bits_a`` is the activation (left operand) width, ``bits_b`` the weight (right operand) width.
``table`` is the multiplier's ``int32 [2**bits_a, 2**bits_b]`` table (a buffer of the frozen
model); the ONNX node does not carry it (the node names its multiplier, whose LUT file the export
writes), so the translation to ONNX drops it. The eager kernel computes exactly what the converted
graph computes in eval mode; export maps each op to one ``appmult`` ONNX node
(:mod:`.onnx_schema`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..luts.indexing import operand_range
from ..ops.int_layers import lut_conv as int_lut_conv
from ..ops.int_layers import lut_linear as int_lut_linear
from ..ops.int_layers import lut_matmul as int_lut_matmul
from ..ops.int_layers import rescale
from ..ops.quantizers import quantize


def _codes(x: Tensor, scale: Tensor, zero_point: Tensor, bits: int, signed: bool) -> Tensor:
    """Integer codes of ``x`` with the calibrated parameters (the converted model's quantizer)."""
    return quantize(x, scale, zero_point.float(), bits, signed)


def _check_frozen(
    table: Tensor, bits_a: int, bits_b: int, signed: bool, layer: str, w: Tensor | None = None
) -> None:
    """The node's widths match its table, and frozen weight codes fit ``bits_b``: the integer
    layers mask codes to the table's widths, so a mismatch would wrap silently."""
    torch._check(
        tuple(table.shape) == (1 << bits_a, 1 << bits_b),
        lambda: (
            f"layer {layer!r}: bits_a={bits_a}, bits_b={bits_b} need a "
            f"{1 << bits_a}x{1 << bits_b} table, got {tuple(table.shape)}"
        ),
    )
    if w is not None and w.numel():
        lo, hi = operand_range(bits_b, signed)
        torch._check(
            bool(w.min() >= lo) and bool(w.max() <= hi),
            lambda: f"layer {layer!r}: weight codes outside [{lo}, {hi}] ({bits_b}-bit)",
        )


def _torch_pads(pads: list[int]) -> list[int]:
    """``F.pad`` amounts (last dimension first) from ONNX-order ``pads``."""
    d = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(d)):
        out += [pads[i], pads[d + i]]
    return out


def conv_output_shape(
    x_shape: list, w_shape: list, strides: list[int], pads: list[int], dilations: list[int]
) -> list:
    """Output shape ``[N, O, *spatial]`` of a convolution."""
    d = len(w_shape) - 2
    spatial = [
        (x_shape[2 + i] + pads[i] + pads[d + i] - dilations[i] * (w_shape[2 + i] - 1) - 1)
        // strides[i]
        + 1
        for i in range(d)
    ]
    return [x_shape[0], w_shape[0], *spatial]


@torch.library.custom_op("appmult_export::lut_conv", mutates_args=())
def lut_conv(
    x: Tensor,
    w: Tensor,
    x_scale: Tensor,
    x_zero_point: Tensor,
    w_scale: Tensor,
    w_zero_point: Tensor,
    bias: Tensor | None,
    table: Tensor,
    strides: list[int],
    pads: list[int],
    dilations: list[int],
    group: int,
    bits_a: int,
    bits_b: int,
    signed: bool,
    multiplier: str,
    multiplier_sha256: str,
    layer: str,
) -> Tensor:
    """One frozen approximate convolution (1-D or 2-D) on a float input."""
    _check_frozen(table, bits_a, bits_b, signed, layer, w)
    if any(pads):
        x = F.pad(x, _torch_pads(pads))
    qx = _codes(x, x_scale, x_zero_point, bits_a, signed)
    acc = int_lut_conv(
        qx,
        x_zero_point.float(),
        w.float(),
        w_zero_point.float(),
        table.to(device=x.device, dtype=torch.int32),
        None,
        None,
        stride=tuple(strides),
        dilation=tuple(dilations),
        groups=group,
    )
    return rescale(acc, x_scale, w_scale, bias, channel_dim=1).contiguous()


@lut_conv.register_fake
def _lut_conv_fake(
    x,
    w,
    x_scale,
    x_zero_point,
    w_scale,
    w_zero_point,
    bias,
    table,
    strides,
    pads,
    dilations,
    group,
    bits_a,
    bits_b,
    signed,
    multiplier,
    multiplier_sha256,
    layer,
):  # noqa: ANN001, ANN202
    return x.new_empty(conv_output_shape(list(x.shape), list(w.shape), strides, pads, dilations))


@torch.library.custom_op("appmult_export::lut_linear", mutates_args=())
def lut_linear(
    x: Tensor,
    w: Tensor,
    x_scale: Tensor,
    x_zero_point: Tensor,
    w_scale: Tensor,
    w_zero_point: Tensor,
    bias: Tensor | None,
    table: Tensor,
    bits_a: int,
    bits_b: int,
    signed: bool,
    multiplier: str,
    multiplier_sha256: str,
    layer: str,
) -> Tensor:
    """One frozen approximate linear layer ``x [..., K] -> [..., N]`` (weight codes ``[N, K]``)."""
    _check_frozen(table, bits_a, bits_b, signed, layer, w)
    qx = _codes(x, x_scale, x_zero_point, bits_a, signed)
    acc = int_lut_linear(
        qx,
        x_zero_point.float(),
        w.float(),
        w_zero_point.float(),
        table.to(device=x.device, dtype=torch.int32),
        None,
        None,
    )
    return rescale(acc, x_scale, w_scale, bias, channel_dim=-1).contiguous()


@lut_linear.register_fake
def _lut_linear_fake(
    x,
    w,
    x_scale,
    x_zero_point,
    w_scale,
    w_zero_point,
    bias,
    table,
    bits_a,
    bits_b,
    signed,
    multiplier,
    multiplier_sha256,
    layer,
):  # noqa: ANN001, ANN202
    return x.new_empty((*x.shape[:-1], w.shape[0]))


def _check_matmul(a: Tensor, b: Tensor, layer: str) -> None:
    torch._check(
        a.dim() >= 2 and b.dim() >= 2,
        lambda: (
            f"layer {layer!r}: export supports matmuls of operands with at least 2 "
            f"dimensions, got {a.dim()}-D @ {b.dim()}-D"
        ),
    )


@torch.library.custom_op("appmult_export::lut_matmul", mutates_args=())
def lut_matmul(
    a: Tensor,
    b: Tensor,
    a_scale: Tensor,
    a_zero_point: Tensor,
    b_scale: Tensor,
    b_zero_point: Tensor,
    table: Tensor,
    bits_a: int,
    bits_b: int,
    signed: bool,
    multiplier: str,
    multiplier_sha256: str,
    layer: str,
) -> Tensor:
    """One frozen approximate ``torch.matmul(a, b)`` of two float activations."""
    _check_matmul(a, b, layer)
    _check_frozen(table, bits_a, bits_b, signed, layer)
    qa = _codes(a, a_scale, a_zero_point, bits_a, signed)
    qb = _codes(b, b_scale, b_zero_point, bits_b, signed)
    acc = int_lut_matmul(
        qa,
        a_zero_point.float(),
        qb,
        b_zero_point.float(),
        table.to(device=a.device, dtype=torch.int32),
        None,
        None,
    )
    return rescale(acc, a_scale, b_scale, None, channel_dim=-1).contiguous()


@lut_matmul.register_fake
def _lut_matmul_fake(
    a,
    b,
    a_scale,
    a_zero_point,
    b_scale,
    b_zero_point,
    table,
    bits_a,
    bits_b,
    signed,
    multiplier,
    multiplier_sha256,
    layer,
):  # noqa: ANN001, ANN202
    _check_matmul(a, b, layer)
    return torch.matmul(a, b)
