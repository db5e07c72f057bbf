"""Layer-level FP approximate computations built on ``appmult::fp_approx_bmm``.

What the FX pass calls for a node assigned an FP multiplier (``mult.kind == "fp"``): no
quantizer, only the format cast inside the op. Every multiply of the layer (forward, and
backward when ``backward="approximate"``) goes through the mantissa table; bias additions
and im2col/col2im sums are exact float32 additions. The first GEMM operand is always the
activation (table rows), the second the weight (table columns).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check
from .fp_gemm import fp_approx_bmm
from .graph_leaf import graph_leaf


def _pair(v: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


@graph_leaf
def fp_matmul(
    a: Tensor,
    b: Tensor,
    mantissa_table: Tensor,
    rounding: str = "truncate",
    backward: str = "approximate",
) -> Tensor:
    """``torch.matmul(a, b)`` (1-D and broadcast batch dimensions included), FP approximate."""
    check(a.dim() >= 1 and b.dim() >= 1, lambda: "fp_matmul needs tensors of at least 1 dimension")
    squeeze_rows, squeeze_cols = a.dim() == 1, b.dim() == 1
    a2 = a.unsqueeze(0) if squeeze_rows else a
    b2 = b.unsqueeze(-1) if squeeze_cols else b
    batch = torch.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    rows, inner, cols = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    a_shape, b_shape = tuple(a.shape), tuple(b.shape)
    check(b2.shape[-2] == inner, lambda: f"matmul shapes {a_shape} and {b_shape} do not match")
    a3 = a2.expand(*batch, rows, inner).reshape(-1, rows, inner).float()
    b3 = b2.expand(*batch, inner, cols).reshape(-1, inner, cols).float()
    out = fp_approx_bmm(a3, b3, mantissa_table, rounding, backward).reshape(*batch, rows, cols)
    if squeeze_rows:
        out = out.squeeze(-2)
    if squeeze_cols:
        out = out.squeeze(-1)
    return out


@graph_leaf
def fp_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    mantissa_table: Tensor,
    rounding: str = "truncate",
    backward: str = "approximate",
) -> Tensor:
    """``F.linear(x, weight, bias)`` with FP approximate products."""
    lead = x.shape[:-1]
    a = x.reshape(1, -1, x.shape[-1]).float()
    y = fp_approx_bmm(a, weight.t().unsqueeze(0).float(), mantissa_table, rounding, backward)
    y = y.reshape(*lead, weight.shape[0])
    return y if bias is None else y + bias


def _same_padding(kernel: tuple[int, ...], dilation: tuple[int, ...]) -> list[int]:
    """``F.pad`` amounts (last dimension first) of ``padding="same"`` (extra at the end)."""
    pads: list[int] = []
    for k, d in zip(reversed(kernel), reversed(dilation), strict=True):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return pads


@graph_leaf
def fp_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    mantissa_table: Tensor,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    rounding: str = "truncate",
    backward: str = "approximate",
    padding_mode: str = "zeros",
) -> Tensor:
    """``F.conv2d`` (and ``nn.Conv2d``'s non-zero ``padding_mode``) via im2col + FP LUT-GEMM.

    Groups become the batch dimension of one GEMM (no Python loop over groups).
    """
    x_shape = tuple(x.shape)
    check(x.dim() in (3, 4), lambda: f"expected a [N,C,H,W] or [C,H,W] input, got {x_shape}")
    if x.dim() == 3:
        return fp_conv2d(
            x.unsqueeze(0),
            weight,
            bias,
            mantissa_table,
            stride,
            padding,
            dilation,
            groups,
            rounding,
            backward,
            padding_mode,
        ).squeeze(0)
    out_ch, in_per_group, kh, kw = weight.shape
    stride, dilation = _pair(stride, 2), _pair(dilation, 2)
    channels = x.shape[1]
    check(
        channels == in_per_group * groups,
        lambda: f"input has {channels} channels, weight expects {in_per_group} x {groups} groups",
    )
    if padding == "valid":
        pads = [0, 0, 0, 0]
    elif padding == "same":
        pads = _same_padding((kh, kw), dilation)
    else:
        ph, pw = _pair(padding, 2)  # type: ignore[arg-type]
        pads = [pw, pw, ph, ph]
    if any(pads):
        mode = "constant" if padding_mode == "zeros" else padding_mode
        x = F.pad(x, pads, mode=mode)
    n, _, h, w = x.shape
    ho = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    # im2col as strided views and one copy: [N, C, Ho, Wo, kh, kw], K ordered (c, ky, kx)
    patches = x.unfold(2, dilation[0] * (kh - 1) + 1, stride[0])
    patches = patches.unfold(3, dilation[1] * (kw - 1) + 1, stride[1])[
        ..., :: dilation[0], :: dilation[1]
    ]
    patches = patches.reshape(n, groups, in_per_group, ho, wo, kh, kw).permute(1, 0, 3, 4, 2, 5, 6)
    a = patches.reshape(groups, n * ho * wo, in_per_group * kh * kw)
    length, k = ho * wo, in_per_group * kh * kw
    b = weight.reshape(groups, out_ch // groups, k).transpose(1, 2)  # [G, K, OC/G]
    y = fp_approx_bmm(a.float(), b.float(), mantissa_table, rounding, backward)
    y = (
        y.reshape(groups, n, length, out_ch // groups)
        .permute(1, 0, 3, 2)
        .reshape(n, out_ch, ho, wo)
    )
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


@graph_leaf
def fp_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    mantissa_table: Tensor,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    rounding: str = "truncate",
    backward: str = "approximate",
    padding_mode: str = "zeros",
) -> Tensor:
    """``F.conv1d`` via :func:`fp_conv2d` on a height-1 image."""
    x_shape = tuple(x.shape)
    check(x.dim() in (2, 3), lambda: f"expected a [N,C,L] or [C,L] input, got {x_shape}")
    if x.dim() == 2:
        return fp_conv1d(
            x.unsqueeze(0),
            weight,
            bias,
            mantissa_table,
            stride,
            padding,
            dilation,
            groups,
            rounding,
            backward,
            padding_mode,
        ).squeeze(0)
    pad2 = padding if isinstance(padding, str) else (0, _pair(padding, 1)[0])
    y = fp_conv2d(
        x.unsqueeze(2),
        weight.unsqueeze(2),
        bias,
        mantissa_table,
        (1, _pair(stride, 1)[0]),
        pad2,
        (1, _pair(dilation, 1)[0]),
        groups,
        rounding,
        backward,
        padding_mode,
    )
    return y.squeeze(2)
