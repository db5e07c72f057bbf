"""``appmult::approx_conv2d`` against LUT-GEMM over an ordinary im2col, opcheck, gradcheck."""

import pytest
import torch
import torch.nn.functional as F

import appmult_fx as amx
from appmult_fx.ops.conv_gemm import approx_conv2d, col2im_rows
from appmult_fx.ops.lut_gemm import approx_bmm

# (in channels, out channels, kernel, stride, dilation, groups, input size)
CASES = {
    "3x3": (3, 4, (3, 3), (1, 1), (1, 1), 1, (7, 6)),
    "strided": (4, 6, (3, 2), (2, 3), (1, 1), 1, (9, 11)),
    "dilated": (2, 3, (2, 3), (1, 2), (2, 1), 1, (8, 9)),
    "grouped": (6, 4, (3, 3), (1, 2), (1, 1), 2, (6, 7)),
    "depthwise": (4, 4, (3, 1), (2, 1), (1, 1), 4, (7, 5)),
    "1x1": (5, 3, (1, 1), (1, 1), (1, 1), 1, (4, 4)),
    # large enough (>= 4096 elements) for the one-pass CPU index kernel
    "large": (16, 24, (3, 3), (1, 1), (1, 1), 1, (16, 18)),
    "large grouped": (12, 20, (3, 2), (2, 1), (1, 2), 2, (27, 21)),
    "large rgb": (3, 40, (3, 3), (1, 1), (1, 1), 1, (34, 34)),
}


def _im2col_reference(qx, qw, table, grads, stride, dilation, groups):
    """The same sums through F.unfold and ``approx_bmm`` (K ordered C, kh, kw)."""
    n, c, h, w = qx.shape
    o, cg, kh, kw = qw.shape
    cols = F.unfold(qx, (kh, kw), dilation=dilation, stride=stride)
    length = cols.shape[2]
    a = cols.reshape(n, groups, cg * kh * kw, length).permute(1, 0, 3, 2)
    a = a.reshape(groups, n * length, cg * kh * kw)
    b = qw.reshape(groups, o // groups, cg * kh * kw).transpose(1, 2).contiguous()
    acc = approx_bmm(a.contiguous(), b, table, *grads)
    ho = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    return acc.reshape(groups, n, ho, -1, o // groups).permute(1, 0, 4, 2, 3).reshape(n, o, ho, -1)


def _case(name, mult, batch=2, margin=0):
    """Random codes for ``CASES[name]``, ``margin`` away from the ends of the operand range."""
    cin, cout, kernel, stride, dilation, groups, size = CASES[name]
    lo, hi = mult.operand_range
    lo, hi = lo + margin, hi - margin
    qx = torch.randint(lo, hi + 1, (batch, cin, *size)).float().requires_grad_()
    qw = torch.randint(lo, hi + 1, (cout, cin // groups, *kernel)).float().requires_grad_()
    return qx, qw, list(stride), list(dilation), groups


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", ["mul7u_trunc7", "mul6s_exact"])
def test_forward_and_lut_backward_equal_im2col_bmm(case: str, name: str) -> None:
    torch.manual_seed(0)
    mult = amx.multiplier(name)
    rand = torch.randn(mult.table.shape)
    grads = (rand, rand.t().contiguous())
    qx, qw, stride, dilation, groups = _case(case, mult)
    out = approx_conv2d(qx, qw, mult.table, *grads, stride, dilation, groups)
    ref = _im2col_reference(qx, qw, mult.table, grads, stride, dilation, groups)
    assert out.is_contiguous() and torch.equal(out, ref)
    g = torch.randn_like(out)
    dx, dw = torch.autograd.grad(out, (qx, qw), g)
    rx, rw = torch.autograd.grad(ref, (qx, qw), g)
    torch.testing.assert_close(dx, rx, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(dw, rw, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ste_backward_is_the_float_convolution_gradient(case: str) -> None:
    torch.manual_seed(1)
    mult = amx.multiplier("mul5s_exact")
    qx, qw, stride, dilation, groups = _case(case, mult)
    out = approx_conv2d(qx, qw, mult.table, None, None, stride, dilation, groups)
    conv = F.conv2d(qx, qw, stride=stride, dilation=dilation, groups=groups)
    assert torch.equal(out, conv.detach())
    g = torch.randn_like(out)
    torch.testing.assert_close(
        torch.autograd.grad(out, (qx, qw), g), torch.autograd.grad(conv, (qx, qw), g)
    )


@pytest.mark.parametrize("mode", ["lut", "ste"])
def test_gradcheck_in_the_integer_domain(mode: str) -> None:
    """Exact multiplier: bilinear in the codes, so step-1 central differences are exact."""
    mult = amx.multiplier("mul5u_exact")
    qx, qw, stride, dilation, groups = _case("grouped", mult, batch=1, margin=1)
    grads = (mult.grad_a, mult.grad_b) if mode == "lut" else (None, None)
    fn = lambda x, w: approx_conv2d(x, w, mult.table, *grads, stride, dilation, groups)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (qx, qw), eps=1.0, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("case", ["strided", "depthwise"])
def test_opcheck(case: str) -> None:
    mult = amx.multiplier("mul4u_exact")
    qx, qw, stride, dilation, groups = _case(case, mult)
    for grads in ((mult.grad_a, mult.grad_b), (None, None)):
        torch.library.opcheck(approx_conv2d, (qx, qw, mult.table, *grads, stride, dilation, groups))


def test_input_errors_are_clear() -> None:
    table = amx.multiplier("mul4u_exact").table
    qx, qw = torch.zeros(1, 4, 5, 5), torch.zeros(2, 4, 3, 3)
    with pytest.raises(RuntimeError, match="do not match"):
        approx_conv2d(qx, qw, table, None, None, [1, 1], [1, 1], 2)
    with pytest.raises(RuntimeError, match="larger than the input"):
        approx_conv2d(qx[:, :, :2], qw, table, None, None, [1, 1], [1, 1], 1)
    with pytest.raises(RuntimeError, match="positive strides"):
        approx_conv2d(qx, qw, table, None, None, [0, 1], [1, 1], 1)
    with pytest.raises(RuntimeError, match="compute in float32"):
        approx_conv2d(qx.double(), qw, table, None, None, [1, 1], [1, 1], 1)
    with pytest.raises(RuntimeError, match="together"):
        approx_conv2d(qx, qw, table, torch.zeros(16, 16), None, [1, 1], [1, 1], 1)


@pytest.mark.parametrize(
    ("groups", "kernel", "stride", "dilation", "hw"),
    [
        (1, (3, 3), (1, 1), (1, 1), (7, 6)),
        (2, (3, 2), (2, 1), (1, 2), (9, 8)),
        (3, (1, 1), (2, 2), (1, 1), (5, 5)),
    ],
)
def test_col2im_rows_equals_fold(groups, kernel, stride, dilation, hw) -> None:
    """The channels-last col2im of the LUT backward against ``F.fold`` on the same columns."""
    n, cg = 2, 2
    c, (h, w) = groups * cg, hw
    ho, wo = ((x - d * (k - 1) - 1) // st + 1 for x, k, st, d in zip(hw, kernel, stride, dilation))
    cols = torch.randn(groups, n * ho * wo, kernel[0] * kernel[1] * cg, dtype=torch.float64)
    fold_in = cols.reshape(groups, n, ho, wo, *kernel, cg).permute(1, 0, 6, 4, 5, 2, 3)
    expected = F.fold(
        fold_in.reshape(n, c * kernel[0] * kernel[1], ho * wo),
        (h, w),
        kernel,
        dilation=dilation,
        stride=stride,
    )
    torch.testing.assert_close(
        col2im_rows(cols, (n, c, h, w), kernel, stride, dilation), expected, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("case", ["large", "large grouped", "large rgb"])
def test_exact_multiplier_equals_the_float_convolution(case) -> None:
    """With an exact multiplier the conv equals ``F.conv2d`` of the codes (float64, exact for
    these sums): every window gathered and laid out right (strides, dilations, groups, a
    3-channel input), on sizes that take the one-pass CPU index kernel."""
    torch.manual_seed(2)
    mult = amx.multiplier("mul8s_exact")
    qx, qw, stride, dilation, groups = _case(case, mult)
    with torch.no_grad():
        out = approx_conv2d(qx, qw, mult.table, None, None, stride, dilation, groups)
    want = F.conv2d(qx.double(), qw.double(), stride=stride, dilation=dilation, groups=groups)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(out.double(), want)


@pytest.mark.parametrize(
    ("kernel", "stride", "dilation", "size"),
    [
        ((3, 3), (1, 1), (1, 1), (6, 64, 34, 34)),
        ((3, 2), (2, 1), (2, 3), (3, 37, 19, 23)),
        ((3, 3), (1, 1), (1, 1), (1, 40, 20, 22)),  # fewer images than threads: channel blocks
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_col2im_kernel_is_bit_identical_to_the_tap_by_tap_adds(
    extension_calls, kernel, stride, dilation, size, threads
) -> None:
    """The CPU col2im kernel (one group, float32, large enough) gives the strided adds' bits,
    written into a fresh tensor or a slice of a larger one, agrees with ``F.fold``, and refuses
    a window larger than its output."""
    from appmult_fx.ops import kernels
    from appmult_fx.ops.dispatch import use_reference

    n, c, h, w = size
    ho, wo = (
        (x - d * (k - 1) - 1) // st + 1 for x, k, st, d in zip((h, w), kernel, stride, dilation)
    )
    cols = torch.randn(1, n * ho * wo, kernel[0] * kernel[1] * c)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = col2im_rows(cols, size, kernel, stride, dilation)
        into = torch.full((n + 2, c, h, w), 7.0)
        col2im_rows(cols, size, kernel, stride, dilation, out=into[1 : n + 1])
    finally:
        torch.set_num_threads(previous)
    assert extension_calls == ["fold_into_planes", "fold_into_planes"]
    with pytest.raises(RuntimeError, match="larger than the output"):  # checked, not read past
        kernels.cpu_extension().fold_into_planes(
            torch.ones(1, 9), torch.zeros(1, 1, 2, 2), 3, 3, 2, 2, 1, 1
        )
    use_reference(True)  # the torch adds
    try:
        want = col2im_rows(cols, size, kernel, stride, dilation)
    finally:
        use_reference(False)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    assert torch.equal(into[1 : n + 1], want)
    assert bool((into[0] == 7.0).all() and (into[-1] == 7.0).all())
    fold_in = cols.reshape(n, ho, wo, kernel[0], kernel[1], c).permute(0, 5, 3, 4, 1, 2)
    folded = F.fold(
        fold_in.reshape(n, -1, ho * wo), (h, w), kernel, dilation=dilation, stride=stride
    )
    torch.testing.assert_close(got, folded, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["large", "large grouped"])
def test_input_gradient_in_image_chunks(monkeypatch, kernels_active, case) -> None:
    """The LUT input gradient computed over near-equal chunks of whole images (bounded im2col
    columns) equals the whole batch's (to 1e-5: a call's row count may pick the other kernel)
    and the gradient of an ordinary im2col + ``approx_bmm`` (its LUT backward, folded by
    ``F.fold``); an empty batch still gets its empty gradient."""
    from appmult_fx.ops import conv_gemm

    torch.manual_seed(5)
    mult = amx.with_gradients(amx.multiplier("mul8s_trunc8"))
    qx, qw, stride, dilation, groups = _case(case, mult, batch=5)
    tables = (mult.table, mult.grad_a, mult.grad_b)

    def input_grad(chunk_bytes: int) -> torch.Tensor:
        monkeypatch.setattr(conv_gemm, "_COLS_CHUNK_BYTES", chunk_bytes)
        out = approx_conv2d(qx, qw, *tables, stride, dilation, groups)
        (dx,) = torch.autograd.grad(out, qx, g)
        return dx

    with torch.no_grad():
        g = torch.randn_like(approx_conv2d(qx, qw, *tables, stride, dilation, groups))
    cin, _, kernel, *_ = CASES[case]
    k = cin // groups * kernel[0] * kernel[1]
    per_image = g.shape[2] * g.shape[3]
    whole = input_grad(1 << 40)
    products, product = [], conv_gemm.lut_bmm_grad_a

    def counted(g: torch.Tensor, a: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        products.append(a.shape[1])
        return product(g, a, *rest)

    monkeypatch.setattr(conv_gemm, "lut_bmm_grad_a", counted)
    chunked = input_grad(2 * groups * per_image * k * 4)  # two images fit: chunks 1 + 2 + 2
    assert products == [per_image, 2 * per_image, 2 * per_image]
    qx2 = qx.detach().clone().requires_grad_()
    want = torch.autograd.grad(
        _im2col_reference(
            qx2, qw, mult.table, (mult.grad_a, mult.grad_b), stride, dilation, groups
        ),
        qx2,
        g,
    )[0]
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
    assert torch.allclose(chunked, want, rtol=1e-6, atol=1e-4)
    assert not torch.equal(chunked, torch.zeros_like(chunked))
    empty = qx[:0].detach().clone().requires_grad_()
    out = approx_conv2d(empty, qw, *tables, stride, dilation, groups)
    (dx,) = torch.autograd.grad(out.sum(), empty)
    assert dx.shape == empty.shape


def _relu_input(qx: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """A float input for ``qx`` with zeros where a ReLU would leave them: whole pixels, single
    entries and -0.0, the rest positive."""
    n, c, h, w = qx.shape
    x = torch.rand(qx.shape, generator=gen) + 0.1
    x[(torch.rand(n, 1, h, w, generator=gen) < share).expand_as(x)] = 0.0
    x[torch.rand(qx.shape, generator=gen) < share / 2] = 0.0
    x[torch.rand(qx.shape, generator=gen) < 0.05] = -0.0
    return x


def test_dead_runs_match_unfold() -> None:
    """The CPU kernel's flags of all-zero runs of 16 im2col entries (K ordered kh, kw, C) against
    ``F.unfold`` of the zero mask, for C a multiple of 16 (runs within a pixel) and not, strides,
    dilations, a last run shorter than 16, and -0.0 counted as 0."""
    from appmult_fx.ops import kernels

    ext = kernels.cpu_extension()
    gen = torch.Generator().manual_seed(3)
    for c, kernel, stride, dilation, size in [
        (32, (3, 3), (1, 1), (1, 1), (9, 8)),
        (16, (3, 2), (2, 1), (1, 2), (11, 9)),
        (24, (1, 1), (2, 2), (1, 1), (7, 7)),
        (3, (3, 3), (1, 1), (1, 1), (8, 8)),
        (48, (2, 2), (1, 1), (2, 2), (6, 7)),
    ]:
        x = _relu_input(torch.zeros(2, c, *size), 0.5, gen)
        got = ext.dead_runs(x, *kernel, *stride, *dilation)
        zero = F.unfold((x == 0).float(), kernel, dilation=dilation, stride=stride)
        n, _, length = zero.shape
        cols = zero.reshape(n, c, kernel[0] * kernel[1], length).permute(0, 3, 2, 1)
        cols = cols.reshape(1, n * length, -1)  # [1, M, K], K ordered (kh, kw, C)
        k = cols.shape[2]
        runs = -(-k // 16)
        padded = F.pad(cols, (0, runs * 16 - k), value=1.0)
        want = padded.reshape(1, n * length, runs, 16).all(-1).to(torch.uint8)
        assert got.dtype == torch.uint8 and torch.equal(got, want), (c, kernel, stride)
        assert 0 < int(want.sum()) < want.numel()


# (relu_pad [left, right, top, bottom], relu_pad_mode) of the relu_input tests
RELU_PADS = {
    "unpadded": (None, "constant"),
    "zeros": ([1, 1, 1, 1], "constant"),
    "reflect": ([2, 1, 0, 1], "reflect"),
    "replicate": ([0, 2, 1, 1], "replicate"),
    "circular": ([1, 0, 1, 0], "circular"),
}


def _unpadded(padded: torch.Tensor, pad: list[int] | None) -> torch.Tensor:
    """The part of ``padded`` that ``pad`` added nothing to."""
    left, right, top, bottom = pad or [0, 0, 0, 0]
    h, w = padded.shape[2:]
    return padded[:, :, top : h - bottom, left : w - right].contiguous()


@pytest.mark.parametrize(
    "case, padding",
    [("large", "unpadded"), ("large rgb", "zeros"), ("strided", "reflect")]
    + [("large grouped", "replicate"), ("1x1", "circular"), ("large", "zeros")],
)
def test_relu_input_leaves_the_input_gradient_zero_where_it_is_zero(
    case: str, padding: str
) -> None:
    """With ``relu_input`` (unpadded, and ``relu_pad`` in each mode), the LUT input gradient is 0
    where the padded input is 0 and within 1e-5 of the full one elsewhere, as with the padded
    tensor itself; the output and the weight gradient are unchanged. A CPU conv of one group
    hands the dA kernel the dead runs (the extension counts the calls)."""
    from appmult_fx.ops import kernels

    gen = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    mult = amx.multiplier("mul7u_trunc7")
    grads = (torch.randn(mult.table.shape), torch.randn(mult.table.shape))
    qx, qw, stride, dilation, groups = _case(case, mult, batch=4)
    pad, mode = RELU_PADS[padding]
    small = _unpadded(_relu_input(qx.detach(), 0.5, gen), pad)
    relu_input = F.pad(small, pad, mode=mode) if pad else small
    args = (mult.table, *grads, stride, dilation, groups)
    full = approx_conv2d(qx, qw, *args)
    before = kernels.cpu_extension().skip_counts()[2]
    out = approx_conv2d(qx, qw, *args, small, pad, mode)
    assert torch.equal(out, full)
    g = torch.randn_like(out)
    dx, dw = torch.autograd.grad(out, (qx, qw), g)
    fx, fw = torch.autograd.grad(full, (qx, qw), g)
    (as_padded,) = torch.autograd.grad(approx_conv2d(qx, qw, *args, relu_input), qx, g)
    assert torch.equal(dx, as_padded)
    dead = relu_input == 0
    assert bool((dx[dead] == 0).all()) and torch.equal(dw, fw)
    torch.testing.assert_close(dx[~dead], fx[~dead], rtol=1e-5, atol=1e-4)
    runs = groups == 1 and qx.numel() >= 4096 and kernels.cpu_extension().best_isa() == "avx512"
    assert not runs or kernels.cpu_extension().skip_counts()[2] > before


def test_relu_input_opcheck_and_errors() -> None:
    mult = amx.multiplier("mul4u_exact")
    qx, qw, stride, dilation, groups = _case("large", mult)
    relu_input = _relu_input(qx.detach(), 0.4, torch.Generator().manual_seed(5))
    args = (qx, qw, mult.table, mult.grad_a, mult.grad_b, stride, dilation, groups)
    torch.library.opcheck(approx_conv2d, (*args, relu_input))
    pad = [1, 2, 2, 1]
    torch.library.opcheck(approx_conv2d, (*args, _unpadded(relu_input, pad), pad, "reflect"))
    with pytest.raises(RuntimeError, match="is not shaped as qx"):
        approx_conv2d(*args, relu_input[:, :, 1:])
    with pytest.raises(RuntimeError, match="is not shaped as qx"):
        approx_conv2d(*args, relu_input, [1, 1, 1, 1])
    with pytest.raises(RuntimeError, match="relu_pad_mode must be one of"):
        approx_conv2d(*args, _unpadded(relu_input, pad), pad, "zeros")
    with pytest.raises(RuntimeError, match="left, right, top, bottom"):
        approx_conv2d(*args, relu_input, [0, 0, 0])
    with pytest.raises(RuntimeError, match="left, right, top, bottom"):
        approx_conv2d(*args, _unpadded(relu_input, [0, 2, 0, 0]), [-1, 3, 0, 0])
    with pytest.raises(RuntimeError, match="too large for reflect padding"):
        approx_conv2d(*args, relu_input[:, :, 14:], [0, 0, 14, 0], "reflect")
    with pytest.raises(RuntimeError, match="relu_pad given without relu_input"):
        approx_conv2d(*args, None, [0, 0, 0, 0])
    with pytest.raises(RuntimeError, match="float32"):
        approx_conv2d(*args, relu_input.double())
    with pytest.raises(RuntimeError, match="relu_input is on meta"):
        approx_conv2d(*args, relu_input.to("meta"))
