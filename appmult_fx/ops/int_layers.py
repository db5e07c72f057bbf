"""Integer-domain layer computations on quantized codes, built on ``appmult::approx_bmm``.

Each function returns the integer-domain result ``SUM_k (qx + zx)(qw + zw)`` with the product
``qx * qw`` replaced by the approximate multiplier ``AM(qx, qw)`` and the zero-point cross
terms exact (the seed's Eq. 8)::

    SUM_k AM(qx, qw) + zw * SUM_k qx + zx * SUM_k qw + K * zx * zw

The combination is done in float64 so the integer-domain value stays exact; :func:`rescale`
then multiplies by ``sx * sw`` and adds the bias. ``zw`` (and ``sw``) may be per output channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .lut_gemm import approx_bmm


def _cross_terms(acc: Tensor, a: Tensor, b: Tensor, zx: Tensor, zw: Tensor) -> Tensor:
    """Add the exact zero-point terms to ``acc [G,M,N]`` for ``a [G,M,K]``, ``b [G,K,N]``;
    ``zw`` is a scalar or ``[G, 1, N]``."""
    k = a.shape[-1]
    zx = zx.detach().double()
    zw = zw.detach().double()
    row = a.sum(dim=2, keepdim=True, dtype=torch.float64)  # [G, M, 1]
    col = b.sum(dim=1, keepdim=True, dtype=torch.float64)  # [G, 1, N]
    return acc.double() + zw * row + zx * col + k * zx * zw


def lut_linear(
    qx: Tensor, zx: Tensor, qw: Tensor, zw: Tensor,
    table: Tensor, grad_a: Tensor | None, grad_b: Tensor | None,
) -> Tensor:
    """Integer-domain linear layer: ``qx [..., K]`` codes times ``qw [N, K]`` codes."""
    torch._check(qx.shape[-1] == qw.shape[1], lambda: f"expected input features {qw.shape[1]}, got {qx.shape[-1]}")
    k, n = qw.shape[1], qw.shape[0]
    a = qx.reshape(1, -1, k)
    b = qw.t().reshape(1, k, n)
    zw_b = zw.reshape(1, 1, n) if zw.dim() == 1 else zw
    acc = _cross_terms(approx_bmm(a, b, table, grad_a, grad_b), a, b, zx, zw_b)
    return acc.reshape(*qx.shape[:-1], n)


def lut_conv(
    qx: Tensor, zx: Tensor, qw: Tensor, zw: Tensor,
    table: Tensor, grad_a: Tensor | None, grad_b: Tensor | None,
    stride: tuple[int, ...], dilation: tuple[int, ...], groups: int,
) -> Tensor:
    """Integer-domain 1-D or 2-D convolution of already padded codes ``qx [N, C, *spatial]``
    with codes ``qw [O, C/groups, *kernel]`` (im2col + one batched LUT-GEMM over groups)."""
    one_d = qw.dim() == 3
    if one_d:
        qx, qw = qx.unsqueeze(2), qw.unsqueeze(2)
        stride, dilation = (1, stride[0]), (1, dilation[0])
    nb, c, h, w = qx.shape
    o, cg, kh, kw = qw.shape
    torch._check(c == cg * groups, lambda: f"expected {cg * groups} input channels, got {c}")
    cols = F.unfold(qx, (kh, kw), dilation=dilation, stride=stride)  # [N, C*kh*kw, L]
    ho = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    length = cols.shape[2]
    kg, og = cg * kh * kw, o // groups
    a = cols.reshape(nb, groups, kg, length).permute(1, 0, 3, 2).reshape(groups, nb * length, kg)
    b = qw.reshape(groups, og, kg).transpose(1, 2)
    zw_b = zw.reshape(groups, 1, og) if zw.dim() == 1 else zw
    acc = _cross_terms(approx_bmm(a, b.contiguous(), table, grad_a, grad_b), a, b, zx, zw_b)
    out = acc.reshape(groups, nb, length, og).permute(1, 0, 3, 2).reshape(nb, o, ho, wo)
    return out.squeeze(2) if one_d else out


def rescale(acc: Tensor, sx: Tensor, sw: Tensor, bias: Tensor | None, channel_dim: int) -> Tensor:
    """Float output ``acc * sx * sw (+ bias)``; ``sw``/``bias`` broadcast along ``channel_dim``."""
    shape = [1] * acc.dim()
    shape[channel_dim] = -1
    scale = sx.detach().double() * (sw.detach().double().reshape(shape) if sw.dim() == 1 else sw.detach().double())
    y = (acc * scale).to(torch.float32)
    return y if bias is None else y + bias.reshape(shape)
