"""Integer-domain layers: the zero-point terms stay exact past float32's integer range."""

import torch

import appmult_fx as amx
from appmult_fx.ops.int_layers import lut_conv, lut_linear

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
