"""Integer-domain layer computations on quantized codes, built on ``appmult::approx_bmm``.

Each function returns the integer-domain result ``SUM_k (qx + zx)(qw + zw)`` with the product
``qx * qw`` replaced by the approximate multiplier ``AM(qx, qw)`` and the zero-point cross
terms exact (the seed's Eq. 8)::

    SUM_k AM(qx, qw) + zw * SUM_k qx + zx * SUM_k qw + K * zx * zw

The combination is done in float64 so the integer-domain value stays exact; :func:`rescale`
then multiplies by ``sx * sw`` and adds the bias. ``zw`` (and ``sw``) may be per output channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import forward_ad

from . import dispatch, kernels
from .checks import check
from .conv_gemm import approx_conv2d
from .graph_leaf import graph_leaf
from .lut_gemm import approx_bmm
from .quantizers import eager_on_cpu

# Codes are integers of at most 8 bits (|code| <= 256), so a float32 sum of this many of them
# has only integer partial sums below 2**24 and is exact in any order.
_EXACT_FLOAT32_TERMS = 2**24 // 256


def _code_sum(codes: Tensor, dim: int) -> Tensor:
    """Exact float64 sum of integer ``codes`` over ``dim`` (kept): float32 partial sums over
    chunks short enough to be exact, which avoids converting the whole tensor to float64."""
    chunks = codes.split(_EXACT_FLOAT32_TERMS, dim=dim)
    total = chunks[0].sum(dim=dim, keepdim=True).double()
    for chunk in chunks[1:]:
        total = total + chunk.sum(dim=dim, keepdim=True).double()
    return total


def _cross_terms(acc: Tensor, a: Tensor, b: Tensor, zx: Tensor, zw: Tensor) -> Tensor:
    """Add the exact zero-point terms to ``acc [G,M,N]`` for ``a [G,M,K]``, ``b [G,K,N]``;
    ``zw`` is a scalar or ``[G, 1, N]``."""
    k = a.shape[-1]
    zx = zx.detach().double()
    zw = zw.detach().double()
    row = _code_sum(a, 2)  # [G, M, 1]
    col = _code_sum(b, 1)  # [G, 1, N]
    return acc.double() + zw * row + zx * col + k * zx * zw


@graph_leaf
def lut_linear(
    qx: Tensor,
    zx: Tensor,
    qw: Tensor,
    zw: Tensor,
    table: Tensor,
    grad_a: Tensor | None,
    grad_b: Tensor | None,
) -> Tensor:
    """Integer-domain linear layer: ``qx [..., K]`` codes times ``qw [N, K]`` codes."""
    k, n, got = qw.shape[1], qw.shape[0], qx.shape[-1]
    check(got == k, lambda: f"expected input features {k}, got {got}")
    a = qx.reshape(1, -1, k)
    b = qw.t().reshape(1, k, n)
    zw_b = zw.reshape(1, 1, n) if zw.dim() == 1 else zw
    acc = _cross_terms(approx_bmm(a, b, table, grad_a, grad_b), a, b, zx, zw_b)
    return acc.reshape(*qx.shape[:-1], n)


@graph_leaf
def lut_conv(
    qx: Tensor,
    zx: Tensor,
    qw: Tensor,
    zw: Tensor,
    table: Tensor,
    grad_a: Tensor | None,
    grad_b: Tensor | None,
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    relu_input: Tensor | None = None,
    relu_pad: Sequence[int] | None = None,
    relu_pad_mode: str = "constant",
) -> Tensor:
    """Integer-domain 1-D or 2-D convolution of already padded codes ``qx [N, C, *spatial]``
    with codes ``qw [O, C/groups, *kernel]`` (``appmult::approx_conv2d``; the zero-point terms
    from window sums, a box filter over the channel sums of ``qx``). ``relu_input``: the float
    tensor ``qx`` was quantized from before ``F.pad(relu_input, relu_pad, relu_pad_mode)``, when
    it is a ReLU's output (the LUT input gradient is 0 where the padded tensor is 0; see
    :mod:`.conv_gemm`), or ``None`` (then the padding is ignored). Unbatched codes
    ``[C, *spatial]`` are convolved as a batch of one, as torch's convolutions do."""
    if qx.dim() == qw.dim() - 1:
        relu = None if relu_input is None else relu_input.unsqueeze(0)
        geometry = (stride, dilation, groups, relu, relu_pad, relu_pad_mode)
        return lut_conv(qx.unsqueeze(0), zx, qw, zw, table, grad_a, grad_b, *geometry).squeeze(0)
    one_d = qw.dim() == 3
    if one_d:
        qx, qw = qx.unsqueeze(2), qw.unsqueeze(2)
        if relu_input is not None:
            relu_input = relu_input.unsqueeze(2)
            relu_pad = None if relu_pad is None else [*relu_pad, 0, 0]
        stride, dilation = (1, stride[0]), (1, dilation[0])
    nb, c, h, w = qx.shape
    o, cg, kh, kw = qw.shape
    expected = cg * groups
    check(c == expected, lambda: f"expected {expected} input channels, got {c}")
    acc = approx_conv2d(
        qx,
        qw,
        table,
        grad_a,
        grad_b,
        list(stride),
        list(dilation),
        groups,
        relu_input,
        None if relu_pad is None or relu_input is None else list(relu_pad),
        relu_pad_mode,
    )
    if eager_on_cpu(qx) and not (zx.any() or zw.any()):
        # symmetric (signed) codes: every cross term is zero (skipping them, and their
        # backward, changes no value or gradient); the float32 sums stay float32, rescale
        # widens them to float64 itself (one float64 temporary instead of two)
        return acc.squeeze(2) if one_d else acc
    k, og = cg * kh * kw, o // groups
    exact = torch.float32 if k <= _EXACT_FLOAT32_TERMS else torch.float64
    channel_sums = qx.to(exact).reshape(nb, groups, cg, h, w).sum(2)
    box = channel_sums.new_ones(groups, 1, kh, kw)
    row = F.conv2d(channel_sums, box, stride=stride, dilation=dilation, groups=groups)
    col = _code_sum(qw.reshape(groups, og, k), 2)  # [G, og, 1]
    zx, zw = zx.detach().double(), zw.detach().double()
    zw_b = zw.reshape(1, groups, og, 1, 1) if zw.dim() == 1 else zw
    out = acc.double().reshape(nb, groups, og, *acc.shape[2:])
    terms = (zw_b * row.double().unsqueeze(2), zx * col.reshape(1, groups, og, 1, 1), k * zx * zw_b)
    if torch.compiler.is_compiling():
        out = out + terms[0] + terms[1] + terms[2]
    else:  # the same sums in the same order, into the fresh float64 copy of acc
        out = out.add_(terms[0]).add_(terms[1]).add_(terms[2])
    out = out.reshape(acc.shape)
    return out.squeeze(2) if one_d else out


class _Rescale(torch.autograd.Function):
    """``float32(double(acc) * scale)`` and its gradient ``double(g) * scale`` (as ``acc``'s
    dtype) in one pass each (``cuda/rescale_cpu.cpp``): the values and gradients of the torch
    expression in :func:`rescale`, bit for bit, without its three float64 temporaries."""

    @staticmethod
    def forward(ctx, acc: Tensor, scale: Tensor, channel_dim: int) -> Tensor:  # noqa: ANN001
        """The float32 output."""
        ctx.scale, ctx.channel_dim, ctx.to_double = scale, channel_dim, acc.dtype == torch.float64
        return kernels.cpu_extension().rescale_forward(acc, scale, channel_dim)

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: ANN001, ANN205
        """The gradient of ``acc``; none for the scale (the torch expression, which has a graph,
        when a graph is being built: ``create_graph=True``)."""
        if torch.is_grad_enabled():
            shape = [1] * g.dim()
            shape[ctx.channel_dim] = -1
            scale = ctx.scale.reshape(shape) if ctx.scale.numel() > 1 else ctx.scale.reshape(())
            d = g.double() * scale
            return (d if ctx.to_double else d.to(torch.float32)), None, None
        d = kernels.cpu_extension().rescale_backward(
            g.contiguous(), ctx.scale, ctx.channel_dim, ctx.to_double
        )
        return d, None, None


@graph_leaf
def rescale(acc: Tensor, sx: Tensor, sw: Tensor, bias: Tensor | None, channel_dim: int) -> Tensor:
    """Float output ``acc * sx * sw (+ bias)``, the product in float64 (an ``acc`` of exact
    integer sums, float32 or float64); ``sw``/``bias`` broadcast along ``channel_dim``."""
    shape = [1] * acc.dim()
    if acc.dim():  # a 0-d acc (a dot product) has per-tensor scales only
        shape[channel_dim] = -1
    scale = sx.detach().double() * (
        sw.detach().double().reshape(shape) if sw.dim() == 1 else sw.detach().double()
    )
    if (
        dispatch.one_pass_cpu(acc)
        and acc.dim() > 0
        and acc.dtype in (torch.float32, torch.float64)
        and sx.numel() == 1
        and sw.dim() <= 1
        and scale.dim() <= acc.dim()
        and scale.device.type == "cpu"
        and forward_ad.unpack_dual(acc).tangent is None
    ):
        y = _Rescale.apply(acc, scale.reshape(-1), channel_dim)
    else:
        # a float32 acc is widened into a fresh tensor, scaled in place (one temporary less)
        product = acc * scale if acc.dtype == torch.float64 else acc.double().mul_(scale)
        y = product.to(torch.float32)
    return y if bias is None else y + bias.reshape(shape)


def _batched(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """``a [..., M, K]`` and ``b [..., K, N]`` as ``[B, M, K]`` / ``[B, K, N]`` with torch's batch
    broadcasting; also returns the broadcast batch shape. A ``b`` without batch dimensions
    is shared, so ``a``'s batch folds into its rows instead of copying ``b``."""
    batch = tuple(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if b.dim() == 2:
        return a.reshape(1, -1, k), b.reshape(1, k, n), batch
    return a.expand(*batch, m, k).reshape(-1, m, k), b.expand(*batch, k, n).reshape(-1, k, n), batch


@graph_leaf
def lut_matmul(
    qa: Tensor,
    za: Tensor,
    qb: Tensor,
    zb: Tensor,
    table: Tensor,
    grad_a: Tensor | None,
    grad_b: Tensor | None,
) -> Tensor:
    """Integer-domain ``torch.matmul`` of two activation code tensors (1-D operands and batch
    broadcasting as torch does them): ``SUM_k (qa + za)(qb + zb)`` with ``AM(qa, qb)``.

    ``qa`` indexes the multiplier's rows (first operand), ``qb`` its columns."""
    check(qa.dim() >= 1 and qb.dim() >= 1, lambda: "expected matmul operands of rank >= 1")
    a = qa.unsqueeze(0) if qa.dim() == 1 else qa
    b = qb.unsqueeze(-1) if qb.dim() == 1 else qb
    a_shape, b_shape = tuple(qa.shape), tuple(qb.shape)
    check(
        a.shape[-1] == b.shape[-2],
        lambda: f"matmul: inner dimensions differ, {a_shape} @ {b_shape}",
    )
    a3, b3, batch = _batched(a, b)
    b3 = b3.contiguous()
    acc = _cross_terms(approx_bmm(a3.contiguous(), b3, table, grad_a, grad_b), a3, b3, za, zb)
    out = acc.reshape(*batch, a.shape[-2], b.shape[-1])
    if qa.dim() == 1:
        out = out.squeeze(-2)
    if qb.dim() == 1:
        out = out.squeeze(-1)
    return out


def einsum_as_bmm(
    equation: str,
) -> tuple[str, str, str, list[str], list[str], list[str], list[str]] | None:
    """Split a two-operand einsum ``equation`` that is a batched matmul into
    ``(lhs, rhs, out, batch, rows, inner, cols)`` index lists, or ``None`` if it is not one
    (ellipsis, repeated index, an index summed within one operand, implicit output)."""
    eq = equation.replace(" ", "")
    if "..." in eq or "->" not in eq:
        return None
    ins, out = eq.split("->")
    parts = ins.split(",")
    if len(parts) != 2:
        return None
    lhs, rhs = parts
    if any(len(set(s)) != len(s) for s in (lhs, rhs, out)) or not set(out) <= set(lhs) | set(rhs):
        return None
    if any(c not in out and c not in other for s, other in ((lhs, rhs), (rhs, lhs)) for c in s):
        return None
    batch = [c for c in out if c in lhs and c in rhs]
    rows = [c for c in out if c in lhs and c not in rhs]
    cols = [c for c in out if c in rhs and c not in lhs]
    inner = [c for c in lhs if c in rhs and c not in out]
    return lhs, rhs, out, batch, rows, inner, cols


@graph_leaf
def lut_einsum(
    equation: str,
    qa: Tensor,
    za: Tensor,
    qb: Tensor,
    zb: Tensor,
    table: Tensor,
    grad_a: Tensor | None,
    grad_b: Tensor | None,
) -> Tensor:
    """Integer-domain ``torch.einsum(equation, a, b)`` for an equation that is a batched matmul
    (see :func:`einsum_as_bmm`): operands are permuted to ``[batch, rows, inner]`` /
    ``[batch, inner, cols]`` and computed by :func:`lut_matmul`."""
    parsed = einsum_as_bmm(equation)
    check(parsed is not None, lambda: f"einsum {equation!r} is not a batched matmul")
    lhs, rhs, out, batch, rows, inner, cols = parsed  # type: ignore[misc]
    ranks = (qa.dim(), qb.dim())
    check(
        ranks == (len(lhs), len(rhs)),
        lambda: f"einsum {equation!r}: operand ranks {ranks[0]}, {ranks[1]}",
    )
    size = {c: qa.shape[lhs.index(c)] for c in lhs}
    for c in rhs:
        size[c] = max(size.get(c, 1), qb.shape[rhs.index(c)])
    a = qa.permute([lhs.index(c) for c in batch + rows + inner])
    b = qb.permute([rhs.index(c) for c in batch + inner + cols])
    nb, nr, ni, nc = (math.prod(size[c] for c in g) for g in (batch, rows, inner, cols))
    a = a.expand(*(size[c] for c in batch), *a.shape[len(batch) :]).reshape(nb, nr, ni)
    b = b.expand(*(size[c] for c in batch), *b.shape[len(batch) :]).reshape(nb, ni, nc)
    acc = lut_matmul(a, za, b, zb, table, grad_a, grad_b)
    natural = batch + rows + cols
    acc = acc.reshape([size[c] for c in natural])  # [] for a full contraction ("i,i->")
    return acc.permute([natural.index(c) for c in out])


@graph_leaf
def lut_conv_transpose(
    qx: Tensor,
    zx: Tensor,
    qw: Tensor,
    zw: Tensor,
    table: Tensor,
    grad_a: Tensor | None,
    grad_b: Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    output_padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> Tensor:
    """Integer-domain 1-D or 2-D transposed convolution of codes ``qx [N, C, *spatial]`` with
    codes ``qw [C, O/groups, *kernel]`` (per-tensor ``zw``).

    One batched LUT-GEMM over groups multiplies every input code with every weight code it
    meets (``[N*H*W, C/g] x [C/g, O/g*kh*kw]``), the exact zero-point terms are added per
    product sum, and ``F.fold`` scatters the sums onto the output (col2im): no padding or
    inserted zero is ever multiplied."""
    check(
        qx.dim() == qw.dim(),
        lambda: (
            f"transposed convolution: expected batched input [N, C, *spatial], got "
            f"{tuple(qx.shape)}; add the batch dimension (x.unsqueeze(0))"
        ),
    )
    one_d = qw.dim() == 3
    if one_d:
        qx, qw = qx.unsqueeze(2), qw.unsqueeze(2)
        stride, dilation = (1, stride[0]), (1, dilation[0])
        padding, output_padding = (0, padding[0]), (0, output_padding[0])
    check(zw.dim() == 0, lambda: "transposed convolution: per-tensor weights only")
    nb, c, h, w = qx.shape
    cin, og, kh, kw = qw.shape
    check(
        c == cin and c % groups == 0,
        lambda: f"expected {cin} input channels divisible by groups={groups}, got {c}",
    )
    cg = c // groups
    a = qx.reshape(nb, groups, cg, h * w).permute(1, 0, 3, 2).reshape(groups, nb * h * w, cg)
    b = qw.reshape(groups, cg, og * kh * kw)
    acc = approx_bmm(a.contiguous(), b.contiguous(), table, grad_a, grad_b)
    acc = _cross_terms(acc, a, b, zx, zw)
    cols = acc.reshape(groups, nb, h * w, og * kh * kw).permute(1, 0, 3, 2)
    cols = cols.reshape(nb, groups * og * kh * kw, h * w)
    size = [
        (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        for n, s, p, d, k, op in zip((h, w), stride, padding, dilation, (kh, kw), output_padding)
    ]
    out = F.fold(cols, size, (kh, kw), dilation=dilation, padding=padding, stride=stride)
    return out.squeeze(2) if one_d else out
