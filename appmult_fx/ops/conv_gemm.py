"""``appmult::approx_conv2d``: a 2-D convolution of integer codes through a multiplier's table.

``approx_conv2d(qx f32[N,C,H,W], qw f32[O,C/g,kh,kw], table, grad_a?, grad_b?, stride, dilation,
groups, relu_input?, relu_pad?, relu_pad_mode) -> f32[N,O,Ho,Wo]`` returns ``SUM AM(qx, qw)``
over each window (no padding: the caller pads the codes), the same sums as
:func:`~.lut_gemm.approx_bmm` over an im2col matrix.

``relu_input`` (optional) is the float tensor the codes were quantized from, given by the graph
pass when it is a ReLU's output, *before* the padding: ``relu_pad`` (``F.pad`` order over the
last two dims, ``[left, right, top, bottom]``) and ``relu_pad_mode`` (``"constant"`` (zeros),
``"reflect"``, ``"replicate"`` or ``"circular"``) pad it to ``qx``'s shape. The op keeps that
unpadded tensor, which the ReLU's own backward keeps anyway, and pads it again in the backward,
so the argument costs no memory until then. The ReLU's backward (and the padding's) discards
the input gradient wherever the padded input is 0, so the LUT input gradient is 0 there, and on
the CPU the dA kernel leaves out the runs of 16 im2col entries that are all 0 (``dead_runs``).
Every other entry gets the same sums as without it.

The codes are turned into uint8 table indices *before* im2col, channels-last (``K`` ordered
``kh, kw, C/g``): one byte per element instead of the float im2col, transpose and index
conversion of a generic matmul. The forward of one group on the CPU hands those indices to the
kernels with the windows' offsets (``lut_conv_sum``), which read each window in place where the
activations are their row operand; elsewhere, and in the LUT backward, the windows are gathered
into the im2col matrix, a copy of contiguous runs of bytes. Gradients: the gradient LUTs
through ``lut_bmm_grad_a`` / ``lut_bmm_grad_w`` and col2im (``gradient="lut"``), or the exact
product's gradient, an ordinary float convolution backward (``gradient="ste"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..luts.indexing import codes_to_indices
from . import dispatch, kernels
from .checks import float32_message
from .grad_layout import like_input
from .lut_gemm import (
    check_index_range,
    check_tables,
    int32_safe_k,
    lut_bmm_grad_a,
    lut_bmm_grad_w,
    lut_sum,
    rows_in_use,
    table_widths,
)


def _out_hw(
    size: Sequence[int], kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> tuple[int, int]:
    """Output height and width of a convolution over an (already padded) ``size``."""
    h, w = ((n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(size, kernel, stride, dilation))
    return h, w


def _check_conv(
    qx: Tensor,
    qw: Tensor,
    table: Tensor,
    grad_a: Tensor | None,
    grad_b: Tensor | None,
    stride: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    relu_input: Tensor | None = None,
    relu_pad: Sequence[int] | None = None,
    relu_pad_mode: str = "constant",
) -> None:
    _check_relu_input(qx, relu_input, relu_pad, relu_pad_mode)
    torch._check(
        qx.dim() == 4 and qw.dim() == 4,
        lambda: (
            f"expected qx [N,C,H,W] and qw [O,C/g,kh,kw], got {tuple(qx.shape)}, {tuple(qw.shape)}"
        ),
    )
    torch._check(
        qx.dtype == torch.float32 and qw.dtype == torch.float32,
        lambda: float32_message(qx, qw),
    )
    torch._check(
        len(stride) == 2 and len(dilation) == 2 and min(*stride, *dilation) >= 1,
        lambda: f"expected 2 positive strides and dilations, got {stride}, {dilation}",
    )
    torch._check(
        groups >= 1 and qw.shape[0] % groups == 0 and qx.shape[1] == qw.shape[1] * groups,
        lambda: (
            f"{qx.shape[1]} input channels, weight {tuple(qw.shape)} and groups={groups} "
            "do not match"
        ),
    )
    torch._check(
        min(_out_hw(qx.shape[2:], qw.shape[2:], stride, dilation)) >= 1,
        lambda: f"kernel {tuple(qw.shape[2:])} larger than the input {tuple(qx.shape[2:])}",
    )
    check_tables(table, grad_a, grad_b)


RELU_PAD_MODES = ("constant", "reflect", "replicate", "circular")  # F.pad's modes


def _padded_shape(x: Tensor, pad: Sequence[int]) -> tuple[int, ...]:
    """The shape of ``F.pad(x, pad)`` for ``x [N, C, H, W]`` and ``pad [left, right, top,
    bottom]``."""
    left, right, top, bottom = pad
    n, c, h, w = x.shape
    return n, c, h + top + bottom, w + left + right


def _check_relu_input(
    qx: Tensor, relu_input: Tensor | None, relu_pad: Sequence[int] | None, relu_pad_mode: str
) -> None:
    """``relu_input`` float32 ``[N, C, H, W]`` on the codes' device, that ``relu_pad`` (4
    non-negative pads, or none) pads to ``qx``'s shape in one of :data:`RELU_PAD_MODES`."""
    torch._check(
        relu_pad_mode in RELU_PAD_MODES,
        lambda: f"relu_pad_mode must be one of {RELU_PAD_MODES}, got {relu_pad_mode!r}",
    )
    pad = [0, 0, 0, 0] if relu_pad is None else list(relu_pad)
    torch._check(
        len(pad) == 4 and min(pad) >= 0,
        lambda: f"expected relu_pad [left, right, top, bottom] >= 0, got {relu_pad}",
    )
    torch._check(
        relu_input is not None or relu_pad is None,
        lambda: "relu_pad given without relu_input",
    )
    if relu_input is None:
        return
    torch._check(
        relu_input.device == qx.device,
        lambda: f"relu_input is on {relu_input.device}, the codes on {qx.device}",
    )
    torch._check(
        relu_input.dim() == 4 and relu_input.dtype == torch.float32,
        lambda: (
            f"expected relu_input float32 [N,C,H,W], got {relu_input.dtype} "
            f"{tuple(relu_input.shape)}"
        ),
    )
    h, w = relu_input.shape[2:]
    wraps = {"reflect": 1, "circular": 0}.get(relu_pad_mode)  # F.pad: pad < size, <= size
    torch._check(
        wraps is None or max(pad[2:]) <= h - wraps and max(pad[:2]) <= w - wraps,
        lambda: f"relu_pad {pad} is too large for {relu_pad_mode} padding of {h}x{w}",
    )
    torch._check(
        _padded_shape(relu_input, pad) == tuple(qx.shape),
        lambda: (
            f"relu_input {tuple(relu_input.shape)} padded by {pad} is not shaped as qx "
            f"{tuple(qx.shape)}"
        ),
    )


def _padded_relu_input(relu_input: Tensor, pad: Sequence[int], mode: str) -> Tensor:
    """``relu_input`` padded to the codes' shape as the graph padded the conv's input."""
    return F.pad(relu_input, list(pad), mode=mode) if any(pad) else relu_input


def im2col_indices(
    ix: Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], groups: int
) -> Tensor:
    """Windows of ``ix [N, C, H, W]`` as ``[groups, N*Ho*Wo, kh*kw*C/groups]`` (rows in output
    order, ``K`` ordered ``kh, kw, C/groups``)."""
    n, c, h, w = ix.shape
    kh, kw = kernel
    ho, wo = _out_hw((h, w), kernel, stride, dilation)
    nhwc = ix.permute(0, 2, 3, 1).contiguous()
    sn, sh, sw, sc = nhwc.stride()
    windows = nhwc.as_strided(
        (n, ho, wo, kh, kw, groups, c // groups),
        (
            sn,
            sh * stride[0],
            sw * stride[1],
            sh * dilation[0],
            sw * dilation[1],
            sc * (c // groups),
            sc,
        ),
    )
    return windows.permute(5, 0, 1, 2, 3, 4, 6).reshape(
        groups, n * ho * wo, kh * kw * (c // groups)
    )


def nhwc_indices(codes: Tensor, bits: int) -> Tensor:
    """Table indices of the codes ``[N, C, H, W]``, laid out channels-last (a ``[N, C, H, W]``
    view of an ``[N, H, W, C]`` tensor, which :func:`im2col_indices` gathers without a copy):
    one pass of the CPU index kernel where it serves (:func:`.dispatch.one_pass_cpu`), else the
    transposition rides on the float -> int16 conversion, the first of
    :func:`codes_to_indices`."""
    n, c, h, w = codes.shape
    if dispatch.one_pass_cpu(codes) and codes.dtype == torch.float32:
        by_pixel = codes.reshape(n, c, h * w).permute(0, 2, 1)
        flat = kernels.cpu_extension().codes_to_indices_3d(by_pixel, bits)
        return flat.reshape(n, h, w, c).permute(0, 3, 1, 2)
    ints = codes.new_empty((n, h, w, c), dtype=torch.int16)
    ints.copy_(codes.permute(0, 2, 3, 1))
    return codes_to_indices(ints, bits).permute(0, 3, 1, 2)


def weight_indices(codes: Tensor, bits: int, groups: int) -> Tensor:
    """Table indices of the weight codes ``[O, C/g, kh, kw]`` as ``[groups, kh*kw*C/g, O/g]``
    (the im2col order). With one group: one pass of the CPU index kernel where it serves, else
    a 2-D transpose (which torch copies in cache-sized blocks), then whole rows of ``O`` bytes
    regathered (a single strided permute would read each element from another cache line)."""
    o, cg, kh, kw = codes.shape
    if groups == 1 and dispatch.one_pass_cpu(codes) and codes.dtype == torch.float32:
        by_tap = codes.reshape(o, cg, kh * kw).permute(2, 1, 0)
        return kernels.cpu_extension().codes_to_indices_3d(by_tap, bits).reshape(1, -1, o)
    iw = codes_to_indices(codes, bits)
    if groups == 1:
        by_input = iw.reshape(o, cg * kh * kw).t().contiguous().reshape(cg, kh, kw, o)
        return by_input.permute(1, 2, 0, 3).reshape(1, kh * kw * cg, o)
    return (
        iw.reshape(groups, o // groups, cg, kh, kw)
        .permute(0, 3, 4, 2, 1)
        .reshape(groups, kh * kw * cg, o // groups)
    )


def col2im_rows(
    cols: Tensor,
    size: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    out: Tensor | None = None,
) -> Tensor:
    """``F.fold`` of im2col rows ``cols [groups, N*Ho*Wo, kh*kw*C/g]`` (the layout of
    :func:`im2col_indices`) onto ``[N, C, H, W]``, written into ``out`` (a contiguous
    ``[N, C, H, W]`` tensor, e.g. a slice of a larger batch) when given. The taps are added in
    ``F.fold``'s order, with no transposed copy of ``cols``: per image into a channels-last sum
    and then transposed by the CPU kernel (one group, float32, where
    :func:`.dispatch.one_pass_cpu` allows), else one strided channels-last add per tap."""
    n, c, h, w = size
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    groups = cols.shape[0]
    one_pass = groups == 1 and cols.dtype == torch.float32 and dispatch.one_pass_cpu(cols)
    if one_pass and (out is None or out.is_contiguous()):
        target = cols.new_empty((n, c, h, w)) if out is None else out
        kernels.cpu_extension().fold_into_planes(cols[0], target, kh, kw, sh, sw, dh, dw)
        return target
    ho, wo = _out_hw((h, w), kernel, stride, dilation)
    src = cols.reshape(groups, n, ho, wo, kh, kw, c // groups).permute(1, 2, 3, 4, 5, 0, 6)
    sums = cols.new_zeros(n, h, w, groups, c // groups)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            columns = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            sums[:, rows, columns].add_(src[:, :, :, i, j])
    nchw = sums.reshape(n, h, w, c).permute(0, 3, 1, 2)
    return nchw.contiguous() if out is None else out.copy_(nchw)


def _sums_to_nchw(acc: Tensor, n: int, ho: int, wo: int) -> Tensor:
    """The exact sums ``[groups, N*Ho*Wo, O/g]`` as contiguous float32 ``[N, O, Ho, Wo]``: int32
    sums of one group in one pass of the CPU copy kernel where it serves
    (:func:`.dispatch.one_pass_cpu`; a tiled transpose, 2-3x faster than torch's strided cast),
    else the torch cast of the permuted view; the same values either way."""
    groups, _, og = acc.shape
    if groups == 1 and acc.dtype == torch.int32 and dispatch.one_pass_cpu(acc):
        by_image = acc.reshape(n, ho * wo, og)
        return kernels.cpu_extension().planes_from_rows(by_image).reshape(n, og, ho, wo)
    nchw = acc.reshape(groups, n, ho, wo, og).permute(1, 0, 4, 2, 3)
    return nchw.reshape(n, groups * og, ho, wo).to(
        torch.float32, memory_format=torch.contiguous_format
    )


def _nchw_to_rows(g: Tensor, groups: int) -> Tensor:
    """``[N, O, Ho, Wo]`` -> ``[groups, N*Ho*Wo, O/g]`` (contiguous)."""
    n, o, ho, wo = g.shape
    return (
        g.reshape(n, groups, o // groups, ho, wo)
        .permute(1, 0, 3, 4, 2)
        .reshape(groups, n * ho * wo, o // groups)
    )


def _weight_grad_layout(dwk: Tensor, shape: Sequence[int], groups: int) -> Tensor:
    """``[groups, kh*kw*C/g, O/g]`` (the im2col order) -> ``[O, C/g, kh, kw]``: the reverse of
    :func:`weight_indices`. With one group: one pass of the CPU copy kernel where it serves
    (:func:`.dispatch.one_pass_cpu`), else rows regathered, then a blocked 2-D transpose."""
    o, cg, kh, kw = shape
    if groups == 1 and dispatch.one_pass_cpu(dwk) and dwk.dtype == torch.float32:
        by_output = dwk[0].reshape(kh * kw, cg, o).permute(2, 1, 0)
        return kernels.cpu_extension().contiguous_3d(by_output).reshape(o, cg, kh, kw)
    if groups == 1:
        rows = dwk[0].reshape(kh, kw, cg, o).permute(2, 0, 1, 3).reshape(cg * kh * kw, o)
        return rows.t().contiguous().reshape(o, cg, kh, kw)
    return (
        dwk.reshape(groups, kh, kw, cg, o // groups).permute(0, 4, 3, 1, 2).reshape(o, cg, kh, kw)
    )


@torch.library.custom_op("appmult::approx_conv2d", mutates_args=())
def approx_conv2d(
    qx: Tensor,
    qw: Tensor,
    table: Tensor,
    grad_a: Tensor | None,
    grad_b: Tensor | None,
    stride: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    relu_input: Tensor | None = None,
    relu_pad: Sequence[int] | None = None,
    relu_pad_mode: str = "constant",
) -> Tensor:
    """``SUM AM(qx, qw)`` over every window of the (already padded) codes ``qx``, as float32
    (``relu_input``, ``relu_pad``, ``relu_pad_mode``: see the module docstring)."""
    _check_conv(
        qx, qw, table, grad_a, grad_b, stride, dilation, groups, relu_input, relu_pad, relu_pad_mode
    )
    bits_a, bits_b = table_widths(table)
    n, _, h, w = qx.shape
    kernel = tuple(qw.shape[2:])
    ix = nhwc_indices(qx, bits_a)
    ib = weight_indices(qw, bits_b, groups)
    acc = _window_sums(ix, ib, table, kernel, stride, dilation) if groups == 1 else None
    if acc is None:
        ia = im2col_indices(ix, kernel, stride, dilation, groups)
        acc = lut_sum(ia, ib, table)  # exact (int64 split-K beyond the int32 bound)
    ho, wo = _out_hw((h, w), kernel, stride, dilation)
    return _sums_to_nchw(acc, n, ho, wo)


def _window_sums(
    ix: Tensor,
    ib: Tensor,
    table: Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> Tensor | None:
    """The exact sums ``[1, N*Ho*Wo, O]`` of one group by the AVX-512 CPU kernels given the
    channels-last indices ``ix`` and the windows' offsets (``CPUBackend.lut_conv_sum``): no
    im2col matrix (9x the input at 3x3, fresh pages at every call) where the activations are the
    kernel's row operand; ``None`` where they do not serve (see there), outside the conditions
    of :func:`.dispatch.one_pass_cpu`, or for a ``K`` past the int32 bound (:func:`.lut_sum`'s
    int64 split). The table rows read are those the largest index of ``ix`` reaches (every
    window's indices are among them), as :func:`.lut_bmm` reads those of the im2col matrix."""
    nhwc = ix.permute(0, 2, 3, 1)
    if not dispatch.one_pass_cpu(nhwc) or ib.shape[1] > int32_safe_k(table):
        return None
    top = int(nhwc.max())
    check_index_range(nhwc, ib, table, top)
    backend = kernels.backend_for(nhwc.device)
    return backend.lut_conv_sum(nhwc, ib, rows_in_use(table, top), kernel, stride, dilation)


@approx_conv2d.register_fake
def _approx_conv2d_fake(
    qx: Tensor,
    qw: Tensor,
    table: Tensor,
    grad_a: Tensor | None,
    grad_b: Tensor | None,
    stride: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    relu_input: Tensor | None = None,
    relu_pad: Sequence[int] | None = None,
    relu_pad_mode: str = "constant",
) -> Tensor:
    _check_conv(
        qx, qw, table, grad_a, grad_b, stride, dilation, groups, relu_input, relu_pad, relu_pad_mode
    )
    return qx.new_empty(
        (qx.shape[0], qw.shape[0], *_out_hw(qx.shape[2:], qw.shape[2:], stride, dilation))
    )


def _setup(ctx, inputs, output) -> None:  # noqa: ANN001
    qx, qw, table, grad_a, grad_b, stride, dilation, groups, relu_input, pad, mode = inputs
    ctx.widths = table_widths(table)
    ctx.conv = (list(stride), list(dilation), groups)
    # relu_input matters to the LUT input gradient only; kept unpadded (the ReLU keeps it too)
    kept = relu_input if grad_a is not None and ctx.needs_input_grad[0] else None
    ctx.relu_pad = ([0, 0, 0, 0] if pad is None else list(pad), mode)
    ctx.save_for_backward(qx, qw, grad_a, grad_b, kept)


# Bytes of float32 im2col columns the input gradient computes at a time (whole images): a
# bound on that buffer at large batches (ResNet-18's layer1 has 38 MB of columns at batch 16,
# 600 MB at batch 256), and blocks the allocator can keep instead of mapping fresh pages for
# each call (glibc maps blocks over 32 MB afresh every time).
_COLS_CHUNK_BYTES = 16 << 20


def _dead_runs(
    relu_input: Tensor | None,
    grad_a: Tensor,
    kernel: tuple[int, int],
    stride: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor | None:
    """Flags ``[1, N*Ho*Wo, ceil(K / 16)]`` of the runs of 16 im2col entries of ``relu_input``
    that are all 0 (one pass of the CPU kernel), where a kernel skips them (one group,
    :func:`.dispatch.one_pass_cpu`, the AVX-512 kernels, a table of more than 16 columns: the
    narrow fast path for weights of at most 4 bits takes no flags); else ``None``."""
    if relu_input is None or groups != 1 or not dispatch.one_pass_cpu(relu_input):
        return None
    if grad_a.shape[1] <= 16 or kernels.backend_for(relu_input.device).resolved_isa() != "avx512":
        return None
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    return kernels.cpu_extension().dead_runs(relu_input, kh, kw, sh, sw, dh, dw)


def _zero_where_zero(dx: Tensor, relu_input: Tensor) -> Tensor:
    """``dx`` set to 0 where ``relu_input`` is 0, in place: one pass of the CPU kernel where it
    serves (:func:`.dispatch.one_pass_cpu`), else ``masked_fill_`` (the same values)."""
    if dispatch.one_pass_cpu(dx) and dx.dtype == torch.float32 and relu_input.is_contiguous():
        kernels.cpu_extension().zero_where_zero(dx, relu_input)
        return dx
    return dx.masked_fill_(relu_input == 0, 0.0)


def _input_grad(
    rows: Tensor,
    ia: Tensor,
    ib: Tensor,
    grad_a: Tensor,
    qx: Tensor,
    conv: tuple[tuple[int, int], Sequence[int], Sequence[int]],
    dead: Tensor | None,
) -> Tensor:
    """The LUT gradient of the padded codes ``qx``: ``lut_bmm_grad_a`` on the output rows
    (``dead``: the runs it may leave 0) and col2im over ``conv`` (kernel, stride, dilation),
    over near-equal chunks of whole images whose columns fit :data:`_COLS_CHUNK_BYTES`.
    Each row's sums are the same in a chunk; the CPU binding picks its kernel (direct or
    transposed, different summation orders) by a call's row count, so a chunk's last bits can
    differ from the whole batch's, within 1e-5, as between batches of different sizes."""
    kernel, stride, dilation = conv
    n = qx.shape[0]
    groups, m, k = ia.shape
    per_image = m // max(1, n)
    fits = max(1, _COLS_CHUNK_BYTES // max(1, groups * per_image * k * 4))
    if n <= fits:
        cols = lut_bmm_grad_a(rows, ia, ib, grad_a, dead)  # [groups, N*Ho*Wo, kh*kw*C/g]
        return col2im_rows(cols, qx.shape, kernel, stride, dilation)
    chunks = -(-n // fits)
    bounds = [n * i // chunks for i in range(chunks + 1)]  # near-equal: no tiny last chunk
    dx = qx.new_empty(qx.shape, dtype=rows.dtype)
    for i0, i1 in zip(bounds[:-1], bounds[1:]):
        part = slice(i0 * per_image, i1 * per_image)
        runs = None if dead is None else dead[:, part]
        cols = lut_bmm_grad_a(rows[:, part], ia[:, part], ib, grad_a, runs)
        col2im_rows(cols, (i1 - i0, *qx.shape[1:]), kernel, stride, dilation, out=dx[i0:i1])
    return dx


def _backward(ctx, g: Tensor):  # noqa: ANN001, ANN202
    qx, qw, grad_a, grad_b, relu_input = ctx.saved_tensors
    stride, dilation, groups = ctx.conv
    need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    dx = dw = None
    if grad_a is None:  # straight-through: the exact product's gradient, a float conv backward
        dx, dw, _ = torch.ops.aten.convolution_backward(
            g.contiguous(),
            qx,
            qw,
            None,
            stride,
            [0, 0],
            dilation,
            False,
            [0, 0],
            groups,
            [need_a, need_b, False],
        )
        return like_input(dx, qx), like_input(dw, qw), *[None] * 9
    kh, kw = qw.shape[2:]
    rows = _nchw_to_rows(g.contiguous(), groups)
    bits_a, bits_b = ctx.widths
    ia = im2col_indices(nhwc_indices(qx, bits_a), (kh, kw), stride, dilation, groups)
    ib = weight_indices(qw, bits_b, groups)
    if need_a:
        conv = ((kh, kw), stride, dilation)
        if relu_input is not None:
            relu_input = _padded_relu_input(relu_input, *ctx.relu_pad)
        dead = _dead_runs(relu_input, grad_a, (kh, kw), stride, dilation, groups)
        dx = _input_grad(rows, ia, ib, grad_a, qx, conv, dead)
        if relu_input is not None:  # the ReLU's backward discards these entries: 0
            dx = _zero_where_zero(dx, relu_input)
    if need_b:
        dw = _weight_grad_layout(lut_bmm_grad_w(rows, ia, ib, grad_b), qw.shape, groups)
    return like_input(dx, qx), like_input(dw, qw), *[None] * 9


approx_conv2d.register_autograd(_backward, setup_context=_setup)
