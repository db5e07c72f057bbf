"""Integer-domain layers: the zero-point terms stay exact past float32's integer range."""

import pytest
import torch

import appmult_fx as amx
from appmult_fx.ops.int_layers import lut_conv, lut_linear, rescale

TABLE = amx.multiplier("mul8u_exact").table
# 255 * K is odd and above 2**24 for this K, so a float32 sum of the codes would round
K = 73_719


def test_linear_row_sums_exact_for_long_k() -> None:
    qx, qw = torch.full((2, K), 255.0), torch.zeros(3, K)
    zx, zw = torch.tensor(0.0), torch.tensor(1.0)
    out = lut_linear(qx, zx, qw, zw, TABLE, None, None)
    assert out.dtype == torch.float64
    assert torch.equal(out, torch.full((2, 3), 255.0 * K, dtype=torch.float64))


def test_conv_window_sums_exact_for_long_k() -> None:
    channels = K // 9  # 3x3 kernel: K = channels * 9
    qx, qw = torch.full((1, channels, 3, 3), 255.0), torch.zeros(2, channels, 3, 3)
    zx, zw = torch.tensor(0.0), torch.tensor([1.0, 2.0])
    out = lut_conv(qx, zx, qw, zw, TABLE, None, None, (1, 1), (1, 1), 1)
    expected = torch.tensor([1.0, 2.0], dtype=torch.float64).reshape(1, 2, 1, 1) * 255 * K
    assert torch.equal(out, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("shape", "channel_dim", "per_channel"),
    [
        ((3, 37, 11, 13), 1, True),
        ((3, 37, 11, 13), 1, False),
        ((2, 500, 37), -1, True),
    ],
)
def test_one_pass_rescale_is_bit_identical_to_the_formula(
    extension_calls, dtype, shape, channel_dim, per_channel
) -> None:
    """The one-pass CPU rescale gives ``float32(double(acc) * sx * sw)`` and its gradient
    ``double(g) * sx * sw`` (as ``acc``'s dtype), written here with torch, bit for bit; and the
    kernel did run both ways."""
    calls = extension_calls
    gen = torch.Generator().manual_seed(6)
    channels = shape[channel_dim]
    acc = (torch.randint(-(2**30), 2**30, shape, generator=gen).to(dtype)).requires_grad_()
    sx = torch.rand((), generator=gen) * 1e-3
    sw = torch.rand(channels if per_channel else (), generator=gen) * 1e-2
    bias = torch.randn(channels, generator=gen)
    g = torch.randn(shape, generator=gen)
    y = rescale(acc, sx, sw, bias, channel_dim)
    y.backward(g)
    assert calls == ["rescale_forward", "rescale_backward"]
    view = [1] * len(shape)
    view[channel_dim] = -1
    scale = sx.double() * (sw.double().reshape(view) if per_channel else sw.double())
    ref = (acc.detach().double() * scale).float() + bias.reshape(view)
    ref_grad = (g.double() * scale).to(dtype)
    assert y.dtype == torch.float32 and torch.equal(
        y.detach().view(torch.int32), ref.view(torch.int32)
    )
    assert acc.grad.dtype == dtype
    assert torch.equal(acc.grad, ref_grad) and not bool((acc.grad == 0).all())


def test_one_pass_rescale_leaves_other_broadcasts_and_graphs_to_torch(kernels_active) -> None:
    """Scales that broadcast along another dimension than ``channel_dim`` (a column of ``sw`` or
    ``sx``), a dual tensor (forward-mode AD) and a
    gradient taken with ``create_graph`` give the torch formula's results."""
    gen = torch.Generator().manual_seed(8)
    acc = torch.randint(-1000, 1000, (96, 96), generator=gen).float()
    col = torch.rand(96, 1, generator=gen)
    for sx, sw in [(torch.tensor(0.01), col), (col, torch.tensor(0.5))]:
        want = (acc.double() * (sx.double() * sw.double())).float()
        got = rescale(acc, sx, sw, None, -1)
        assert got.shape == want.shape and torch.equal(got, want)
    sx, sw = torch.tensor(0.01), torch.rand(96, generator=gen)
    scale = sx.double() * sw.double()
    tangent = torch.randn(96, 96, generator=gen)
    _, jvp = torch.autograd.functional.jvp(lambda a: rescale(a, sx, sw, None, -1), acc, tangent)
    assert torch.equal(jvp, (tangent.double() * scale).float())
    from torch.autograd import forward_ad

    with forward_ad.dual_level():
        dual = rescale(forward_ad.make_dual(acc, tangent), sx, sw, None, -1)
        assert torch.equal(forward_ad.unpack_dual(dual).tangent, jvp)
