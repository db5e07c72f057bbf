"""Depthwise/grouped/dilated conv, Conv1d and transposed convs through LUT-GEMM."""

from __future__ import annotations

import math
import warnings
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import appmult_fx as amx
from appmult_fx.ops import conv_gemm, lut_gemm

from .fake_quant import fake_quant_forward

EXACT = amx.multiplier("mul8u_exact")


class Wrap(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class FunctionalTranspose(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3) * 0.2)
        self.bias = nn.Parameter(torch.randn(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(
            x, self.weight, self.bias, stride=2, padding=1, output_padding=1, groups=2
        )


def _convert(model: nn.Module, spec: amx.Spec, x: torch.Tensor, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = amx.convert(model, spec, example_inputs=x, **kw)
        if amx.quantizers(gm):
            amx.calibrate(gm, [x], progress=False)
    return gm.eval()


CASES = {
    "depthwise": (lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6), (2, 6, 7, 7), "conv2d"),
    "grouped_dilated": (
        lambda: nn.Conv2d(6, 9, 3, padding=2, dilation=2, groups=3, stride=2),
        (2, 6, 9, 9),
        "conv2d",
    ),
    "conv1d_grouped": (
        lambda: nn.Conv1d(4, 8, 5, padding=4, dilation=2, groups=2),
        (2, 4, 11),
        "conv1d",
    ),
    "transpose2d": (
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
        (2, 4, 5, 6),
        "conv_transpose2d",
    ),
    "transpose2d_dilated": (
        lambda: nn.ConvTranspose2d(3, 5, (2, 3), stride=(1, 2), dilation=(2, 1)),
        (1, 3, 4, 5),
        "conv_transpose2d",
    ),
    "transpose1d": (
        lambda: nn.ConvTranspose1d(4, 3, 4, stride=3, padding=1, output_padding=2),
        (2, 4, 6),
        "conv_transpose1d",
    ),
}


def _macs(layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    w = layer.weight.shape
    if isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        return x.numel() * math.prod(w[1:])
    return y.numel() * math.prod(w[1:])


@pytest.mark.parametrize("mult", [EXACT, amx.multiplier("mul8x4s_exact")], ids=["8x8", "8x4"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_conv_variant_equals_fake_quantization(case: str, mult: amx.Multiplier) -> None:
    torch.manual_seed(0)
    make, shape, op = CASES[case]
    model, x = Wrap(make()).eval(), torch.randn(*shape)
    gm = _convert(model, amx.Spec().set_global(mult), x, gradient="lut")
    (rec,) = amx.layers(gm)
    assert (rec.bits_a, rec.bits_b, rec.widths) == (mult.bits_a, mult.bits_b, mult.widths)
    assert (rec.name, rec.op, rec.macs) == ("layer", op, _macs(model.layer, x, model(x)))
    with (
        mock.patch.object(conv_gemm, "lut_sum", wraps=conv_gemm.lut_sum) as conv_spy,
        mock.patch.object(lut_gemm, "lut_sum", wraps=lut_gemm.lut_sum) as bmm_spy,
    ):
        out = gm(x)
    # all groups in one batched LUT-GEMM, no loop over groups
    assert conv_spy.call_count + bmm_spy.call_count == 1
    ref = fake_quant_forward(gm, x)
    assert out.shape == model(x).shape
    torch.testing.assert_close(
        out.double(), ref.double(), rtol=1e-5, atol=1e-5 * ref.abs().max().item()
    )
    near_float = 0.999 if mult.is_square else 0.98  # 4-bit weights
    assert F.cosine_similarity(out.flatten(), model(x).flatten(), dim=0) > near_float
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gm.parameters())


def test_functional_conv_transpose() -> None:
    torch.manual_seed(1)
    model, x = FunctionalTranspose(), torch.randn(1, 4, 5, 5)
    gm = _convert(model, amx.Spec().set_global(EXACT), x)
    (rec,) = amx.layers(gm)
    assert (rec.op, rec.macs) == ("conv_transpose2d", x.numel() * 3 * 9)
    torch.testing.assert_close(
        gm(x).double(), fake_quant_forward(gm, x).double(), rtol=1e-5, atol=1e-4
    )
    assert F.cosine_similarity(gm(x).flatten(), model(x).flatten(), dim=0) > 0.999


def test_conv3d_is_a_clear_error_or_float() -> None:
    model, x = Wrap(nn.Conv3d(2, 3, 3)), torch.randn(1, 2, 4, 4, 4)
    with pytest.raises(
        ValueError, match=r"op 'conv3d' is not supported .*set_module_name\('layer', None\)"
    ):
        amx.convert(model, amx.Spec().set_global(EXACT))
    gm = _convert(model, amx.Spec().set_global(EXACT).set_module_name("layer", None), x)
    (rec,) = amx.layers(gm)
    assert (rec.op, rec.multiplier, rec.macs) == ("conv3d", None, 3 * 2 * 2 * 2 * 2 * 27)


def test_unsupported_transpose_options_are_clear_errors() -> None:
    class WithSize(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = nn.ConvTranspose2d(2, 2, 3, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.up(x, output_size=[8, 8])

    with pytest.raises(ValueError, match="output_size"):
        amx.convert(WithSize(), amx.Spec().set_global(EXACT))
    with pytest.raises(ValueError, match="per-channel"):
        amx.convert(
            Wrap(nn.ConvTranspose2d(2, 2, 3)), amx.Spec().set_global(EXACT, per_channel=True)
        )
