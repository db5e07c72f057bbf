"""The leaner code around the kernels computes what the straightforward formulas compute, bit for
bit: quantizer codes and gradients, table indices, and a converted conv's output and gradients
(zero points, per-channel scales, groups, 1-D, signed and unsigned, 8x8 and 8x4 tables).

The references below are the plain formulas (one torch op per step, float64 cross terms and
rescale), written out here independently of the optimised code under test; results are compared
on their bit patterns, so even a ``-0.0`` for a ``+0.0`` fails."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from appmult_fx.luts.indexing import codes_to_indices, operand_range
from torch import Tensor

import appmult_fx as amx
from appmult_fx.ops.conv_gemm import (
    approx_conv2d,
    col2im_rows,
    im2col_indices,
    nhwc_indices,
    weight_indices,
)
from appmult_fx.ops.int_layers import lut_conv, rescale
from appmult_fx.ops.lut_gemm import lut_bmm_grad_a, lut_bmm_grad_w
from appmult_fx.ops.quantizers import quantize


def same_bits(a: Tensor, b: Tensor) -> bool:
    """Equal dtype, shape and bit pattern (so ``-0.0`` differs from ``+0.0``)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        ints = {torch.float32: torch.int32, torch.float64: torch.int64}[a.dtype]
        return torch.equal(a.contiguous().view(ints), b.contiguous().view(ints))
    return torch.equal(a, b)


def reference_quantize(x: Tensor, scale: Tensor, zp: Tensor, bits: int, signed: bool):  # noqa: ANN201
    """Codes ``round(clamp(x / s - zp))`` and the straight-through gradient map
    ``g -> where(inside, g / s, 0)``, one torch op per step."""
    qmin, qmax = operand_range(bits, signed)
    v = x / scale - zp
    q = torch.clamp(v, qmin, qmax)
    return torch.round(q), lambda g: torch.where(q == v, g / scale, 0.0)


def reference_indices(codes: Tensor, bits: int) -> Tensor:
    """Index = the code's low ``bits`` bits, via int64."""
    return torch.bitwise_and(codes.to(torch.int64), (1 << bits) - 1).to(torch.uint8)


def reference_output(acc: Tensor, qx, zx, qw, zw, sx, sw, bias, conv: tuple) -> Tensor:  # noqa: ANN001
    """The layer's formula with the dtypes of the straightforward version: window sums of the
    codes by a float32 box filter (exact for these short windows), cross terms
    ``zw*SUM qx + zx*SUM qw + K*zx*zw`` and ``acc * sx * sw`` in float64, float32, plus bias."""
    stride, dilation, groups = conv
    o, cg, kh, kw = qw.shape
    og, k = o // groups, cg * kh * kw
    sums = qx.reshape(qx.shape[0], groups, cg, *qx.shape[2:]).sum(2)
    box = torch.ones(groups, 1, kh, kw)
    row = F.conv2d(sums, box, stride=stride, dilation=dilation, groups=groups)
    col = qw.reshape(o, -1).sum(1).double().reshape(1, o, 1, 1)
    zwd = zw.double().reshape(1, -1, 1, 1) if zw.dim() == 1 else zw.double()
    zxd = zx.double()
    cross = zwd * row.double().repeat_interleave(og, dim=1) + zxd * col
    out = acc.double() + cross + k * zxd * zwd
    scale = sx.double() * (sw.double().reshape(1, -1, 1, 1) if sw.dim() == 1 else sw.double())
    y = (out * scale).to(torch.float32)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("zero", [0.0, -0.0, -3.0])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 7), (64, 32, 33)])  # below / above the one-pass size
def test_quantize_matches_formula(
    signed: bool, zero: float, grad: bool, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(1)
    x = torch.randn(*shape) * 4
    x[0, 0, :4] = torch.tensor([0.0, -0.0, 100.0, -100.0])
    scale = torch.tensor(0.07)
    zp = torch.tensor(0.0 if signed else zero)
    xa = x.clone().requires_grad_(grad)
    got = quantize(xa, scale, zp, 8 if not signed else 4, signed)
    want, grad_map = reference_quantize(x, scale, zp, 8 if not signed else 4, signed)
    assert same_bits(got.detach(), want)
    if grad:
        g = torch.randn_like(x)
        got.backward(g)
        assert same_bits(xa.grad, grad_map(g))


def test_quantize_per_channel_matches_formula() -> None:
    torch.manual_seed(2)
    w = torch.randn(6, 3, 3, 3)
    w[:, 0, 0, 0] = -0.0
    w.requires_grad_(True)
    scale = torch.rand(6, 1, 1, 1) * 0.1 + 0.01
    zp = torch.tensor([0.0, -0.0, -1.0, -7.0, 0.0, -2.0]).reshape(6, 1, 1, 1)
    got = quantize(w, scale, zp, 4, False)
    want, grad_map = reference_quantize(w.detach(), scale, zp, 4, False)
    assert same_bits(got.detach(), want)
    g = torch.randn_like(w)
    got.backward(g)
    assert same_bits(w.grad, grad_map(g))


@pytest.mark.parametrize("bits", range(2, 9))
def test_indices_of_every_int16_code(extension_calls, bits: int) -> None:
    """Every int16 code, through the generic conversion, the channels-last activation indices
    and the im2col weight indices (the one-pass CPU kernel, which must serve these sizes, on
    whole and ragged 16-column strips)."""
    calls = extension_calls
    codes = torch.arange(-(2**15), 2**15, dtype=torch.float32)
    assert same_bits(codes_to_indices(codes, bits), reference_indices(codes, bits))
    shuffled = codes[torch.randperm(codes.numel(), generator=torch.Generator().manual_seed(0))]
    for nchw in (codes.reshape(4, 16, 32, 32), shuffled[: 3 * 29 * 11 * 13].reshape(3, 29, 11, 13)):
        got = nhwc_indices(nchw, bits)
        assert got.permute(0, 2, 3, 1).is_contiguous()
        assert same_bits(got.contiguous(), reference_indices(nchw, bits))
    for shape in ((128, 32, 4, 4), (37, 29, 3, 3), (4096, 16, 1, 1)):
        o, cg, kh, kw = shape
        weights = shuffled[: o * cg * kh * kw].reshape(shape)
        want = reference_indices(weights, bits).permute(2, 3, 1, 0).reshape(1, kh * kw * cg, o)
        assert same_bits(weight_indices(weights, bits, 1), want)
    assert calls == ["codes_to_indices_3d"] * 5


@pytest.mark.parametrize("dims", [(1, 4608, 512), (9, 29, 37), (37, 29, 9), (3, 1, 17), (1, 1, 1)])
def test_contiguous_copies_of_every_permuted_view(dims: tuple) -> None:
    """The one-pass CPU copy kernel equals torch's ``contiguous()`` on every permutation of a
    3-D tensor (the transposes it serves, ragged tiles, unit dimensions), bit for bit."""
    import itertools

    from appmult_fx.ops import kernels

    x = torch.randn(dims)
    for order in itertools.permutations(range(3)):
        view = x.permute(order)
        assert same_bits(kernels.cpu_extension().contiguous_3d(view), view.contiguous()), order


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_output_planes_equal_the_cast_of_the_permuted_rows(extension_calls, threads) -> None:
    """The convolution's int32 rows ``[N*Ho*Wo, O]`` become float32 ``[N, O, Ho, Wo]`` through
    the tiled CPU kernel with torch's cast, bit for bit: sums beyond 2**24 (rounded to nearest
    even), the int32 extremes, ragged tiles, one pixel or one channel; and ``approx_conv2d``
    hands its output to that kernel."""
    from appmult_fx.ops import kernels

    gen = torch.Generator().manual_seed(4)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for n, p, c in ((16, 1024, 64), (3, 33, 70), (2, 1, 513), (5, 97, 1)):
            rows = torch.randint(-(2**31), 2**31 - 1, (n, p, c), dtype=torch.int32, generator=gen)
            rows.view(-1)[:4] = torch.tensor([-(2**31), 2**31 - 1, 2**24 + 1, -(2**24) - 3])
            want = rows.permute(0, 2, 1).to(torch.float32, memory_format=torch.contiguous_format)
            assert same_bits(kernels.cpu_extension().planes_from_rows(rows), want), (n, p, c)
        mult = amx.multiplier("mul8s_exact")
        qx = torch.randint(-128, 128, (2, 16, 12, 12), generator=gen).float()
        qw = torch.randint(-128, 128, (24, 16, 3, 3), generator=gen).float()
        extension_calls.clear()
        with torch.no_grad():
            out = approx_conv2d(qx, qw, mult.table, None, None, [1, 1], [1, 1], 1)
    finally:
        torch.set_num_threads(previous)
    assert extension_calls[-1] == "planes_from_rows"
    assert same_bits(out, F.conv2d(qx.double(), qw.double()).float())


CASES = [
    # multiplier, zero points, per-channel weights, groups, one_d
    ("mul8u_trunc4", True, False, 1, False),
    ("mul8u_trunc4", True, True, 2, False),
    ("mul8x4u_trunc3", True, True, 1, True),
    ("mul8s_exact", False, False, 1, False),
    ("mul8x4s_trunc2", False, True, 2, False),
    ("mul8x4s_trunc2", False, False, 1, True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("gradient", ["lut", "ste"])
def test_conv_layer_matches_formula(case: tuple, gradient: str) -> None:
    name, zero_points, per_channel, groups, one_d = case
    mult = amx.with_gradients(amx.multiplier(name))
    grads = (mult.grad_a, mult.grad_b) if gradient == "lut" else (None, None)
    torch.manual_seed(3)
    c, o = 4 * groups, 6
    qmin_a, qmax_a = operand_range(mult.bits_a, mult.signed)
    qmin_b, qmax_b = operand_range(mult.bits_b, mult.signed)
    qx = torch.randint(qmin_a, qmax_a + 1, (2, c, 7, 9)).float().requires_grad_(True)
    qw = torch.randint(qmin_b, qmax_b + 1, (o, 4, 3, 3)).float().requires_grad_(True)
    zx = torch.tensor(-5.0 if zero_points else 0.0)
    zw = torch.tensor(-2.0) if zero_points else torch.tensor(0.0)
    sx = torch.tensor(0.0123)
    sw = torch.rand(o) * 0.05 + 0.001 if per_channel else torch.tensor(0.031)
    if per_channel and zero_points:
        zw = -torch.arange(o, dtype=torch.float32)
    bias = torch.randn(o, requires_grad=True)
    stride, dilation = (1, 2), (2, 1)
    if one_d:
        qx = qx[:, :, 0].detach().requires_grad_(True)
        qw = qw[:, :, 0].detach().requires_grad_(True)
        stride, dilation = (2,), (1,)
    acc = lut_conv(qx, zx, qw, zw, mult.table, *grads, stride, dilation, groups)
    got = rescale(acc, sx, sw, bias, channel_dim=1)
    # reference: the op's sums (tested against a scalar loop elsewhere) + float64 formula
    rx, rw = qx.detach().clone().requires_grad_(True), qw.detach().clone().requires_grad_(True)
    rb = bias.detach().clone().requires_grad_(True)
    ux, uw = (rx.unsqueeze(2), rw.unsqueeze(2)) if one_d else (rx, rw)
    st, di = ((1, *stride), (1, *dilation)) if one_d else (stride, dilation)
    sums = approx_conv2d(ux, uw, mult.table, *grads, list(st), list(di), groups)
    want = reference_output(sums, ux, zx, uw, zw, sx, sw, rb, (st, di, groups))
    want = want.squeeze(2) if one_d else want
    assert same_bits(got.detach(), want.detach())
    g = torch.randn_like(got)
    got.backward(g)
    want.backward(g)
    for a, b in ((qx.grad, rx.grad), (qw.grad, rw.grad), (bias.grad, rb.grad)):
        assert same_bits(a, b)


@pytest.mark.parametrize(
    "shape, groups",
    [
        ((6, 4, 3, 3), 1),
        ((5, 3, 1, 1), 1),
        ((4, 6, 3, 2), 1),
        ((6, 2, 3, 3), 2),
        ((96, 80, 3, 3), 1),  # large enough for the one-pass CPU index and layout kernels
        ((37, 29, 3, 3), 1),  # ... on ragged 16-element tiles
        ((20, 300, 1, 1), 1),
    ],
)
def test_conv_lut_gradients_match_the_products(shape: tuple, groups: int) -> None:
    """The weight indices in im2col order, dW (the gradient product ``lut_bmm_grad_w`` moved to
    the weight's ``[O, C/g, kh, kw]`` layout) and dX (its col2im) are the plain permutes."""
    mult = amx.with_gradients(amx.multiplier("mul8x4s_trunc2"))
    torch.manual_seed(4)
    o, cg, kh, kw = shape
    qx = torch.randint(-128, 128, (2, cg * groups, 8, 9)).float().requires_grad_(True)
    qw = torch.randint(-8, 8, shape).float().requires_grad_(True)
    stride, dilation = [2, 1], [1, 2]
    out = approx_conv2d(qx, qw, mult.table, mult.grad_a, mult.grad_b, stride, dilation, groups)
    g = torch.randn_like(out)
    dx, dw = torch.autograd.grad(out, (qx, qw), g)
    rows = g.reshape(2, groups, o // groups, *g.shape[2:]).permute(1, 0, 3, 4, 2)
    rows = rows.reshape(groups, -1, o // groups)
    ia = im2col_indices(reference_indices(qx.detach(), 8), (kh, kw), stride, dilation, groups)
    ib = reference_indices(qw.detach(), 4).reshape(groups, o // groups, cg, kh, kw)
    ib = ib.permute(0, 3, 4, 2, 1).reshape(groups, kh * kw * cg, o // groups)
    assert same_bits(weight_indices(qw.detach(), 4, groups), ib)
    dwk = lut_bmm_grad_w(rows, ia, ib, mult.grad_b)
    want = dwk.reshape(groups, kh, kw, cg, o // groups).permute(0, 4, 3, 1, 2).reshape(shape)
    assert same_bits(dw, want) and dw.is_contiguous()
    cols = lut_bmm_grad_a(rows, ia, ib, mult.grad_a)
    assert same_bits(dx, col2im_rows(cols, qx.shape, (kh, kw), stride, dilation))
