"""FP layer functions: conv (1-D/2-D, padding/stride/dilation/groups), linear, matmul."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from appmult_fx.luts.fp import FPMultiplier

import appmult_fx as amx
from appmult_fx.ops.fp_layers import fp_conv1d, fp_conv2d, fp_linear, fp_matmul

EXACT = amx.multiplier("fp_trunc7").mantissa_table  # exact on operands with <= 3 significant bits


def _ints(*shape: int) -> torch.Tensor:
    """Small integers: their products and sums are exact, so FP layers must equal torch's."""
    return torch.randint(-4, 5, shape).float()


def _asymmetric() -> FPMultiplier:
    """A random valid table with table[i, j] != table[j, i]: catches swapped operands."""
    table = torch.randint(0, 2 << 4, (16, 16), dtype=torch.int32)
    return FPMultiplier("random4", 4, table)


CONV2D_CASES = [
    {},
    {"stride": 2, "padding": 1},
    {"stride": (2, 1), "padding": (2, 0), "dilation": (1, 2), "groups": 2},
    {"padding": "same", "dilation": 2, "groups": 3},
    {"padding": "valid", "groups": 6},
    {"padding": (1, 2), "padding_mode": "reflect", "groups": 2},
    {"padding": 1, "padding_mode": "circular", "stride": 2},
]


@pytest.mark.parametrize("kw", CONV2D_CASES, ids=str)
def test_conv2d_equals_torch_on_exact_operands(kw: dict) -> None:
    groups = kw.get("groups", 1)
    conv = torch.nn.Conv2d(6, 12, (3, 2), bias=True, **kw)
    with torch.no_grad():
        conv.weight.copy_(_ints(*conv.weight.shape))
        conv.bias.copy_(_ints(12))
    x = _ints(2, 6, 9, 8)
    y = fp_conv2d(
        x,
        conv.weight,
        conv.bias,
        EXACT,
        conv.stride,
        kw.get("padding", 0),
        conv.dilation,
        groups,
        padding_mode=conv.padding_mode,
    )
    assert torch.equal(y, conv(x))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"stride": 3, "padding": 2, "dilation": 2, "groups": 2},
        {"padding": "same", "padding_mode": "replicate"},
    ],
    ids=str,
)
def test_conv1d_equals_torch_on_exact_operands(kw: dict) -> None:
    conv = torch.nn.Conv1d(4, 6, 3, **kw)
    with torch.no_grad():
        conv.weight.copy_(_ints(*conv.weight.shape))
        conv.bias.copy_(_ints(6))
    x = _ints(3, 4, 13)
    y = fp_conv1d(
        x,
        conv.weight,
        conv.bias,
        EXACT,
        conv.stride,
        kw.get("padding", 0),
        conv.dilation,
        conv.groups,
        padding_mode=conv.padding_mode,
    )
    assert torch.equal(y, conv(x))
    assert torch.equal(
        fp_conv1d(
            x[0],
            conv.weight,
            None,
            EXACT,
            conv.stride,
            kw.get("padding", 0),
            conv.dilation,
            conv.groups,
            padding_mode=conv.padding_mode,
        ),
        conv(x[:1])[0] - conv.bias[:, None],
    )


def test_conv2d_products_are_activation_times_weight_in_unfold_order() -> None:
    mult = _asymmetric()
    x, w = torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)
    y = fp_conv2d(x, w, None, mult.mantissa_table, stride=2, padding=1, groups=2)
    xp = F.pad(x, [1, 1, 1, 1])
    want = torch.zeros(1, 4, 3, 3)
    for oc in range(4):
        g = oc // 2
        for i in range(3):
            for j in range(3):
                acc = torch.zeros(())
                for c in range(2):
                    for ky in range(3):
                        for kx in range(3):
                            a = xp[0, g * 2 + c, 2 * i + ky, 2 * j + kx]
                            acc = acc + mult.product(a, w[oc, c, ky, kx])
                want[0, oc, i, j] = acc
    assert torch.equal(y, want)


def test_linear_and_matmul_order_and_broadcasting() -> None:
    mult = _asymmetric()
    t = mult.mantissa_table
    x, w, b = torch.randn(2, 3, 5), torch.randn(4, 5), torch.randn(4)
    want = torch.zeros(2, 3, 4)
    for k in range(5):
        want = want + mult.product(x[..., k, None], w[None, None, :, k])
    assert torch.equal(fp_linear(x, w, b, t), want + b)
    a, bb = torch.randn(3, 1, 4, 5), torch.randn(2, 5, 6)
    got = fp_matmul(a, bb, t)
    ref = torch.zeros(3, 2, 4, 6)
    for k in range(5):
        ref = ref + mult.product(a[..., :, k, None], bb[..., None, k, :])
    assert torch.equal(got, ref)
    v = torch.randn(5)
    assert torch.equal(fp_matmul(v, bb, t), fp_matmul(v[None], bb, t).squeeze(-2))
    assert torch.equal(fp_matmul(a, v, t), fp_matmul(a, v[:, None], t).squeeze(-1))
    assert fp_matmul(v, v, t).shape == ()


def test_layers_backpropagate_through_the_approximate_gemms() -> None:
    x = _ints(2, 4, 6, 6).requires_grad_()
    w = _ints(6, 2, 3, 3).requires_grad_()
    for backward in ("approximate", "exact"):
        x.grad = w.grad = None
        fp_conv2d(x, w, None, EXACT, padding=1, groups=2, backward=backward).sum().backward()
        x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        F.conv2d(x2, w2, None, padding=1, groups=2).sum().backward()
        assert torch.equal(x.grad, x2.grad) and torch.equal(w.grad, w2.grad)
