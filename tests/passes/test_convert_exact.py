"""An exact multiplier reproduces ordinary quantized conv/linear: the integer accumulator
bit for bit, the float output within 1e-5 relative (independent integer reference).

Square and rectangular (``bits_a x bits_b``: activations at ``bits_a``, weights at ``bits_b``)
exact multipliers, weights per tensor and per output channel."""

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import appmult_fx as amx


class _Capture(fx.Interpreter):
    def __init__(self, gm):
        super().__init__(gm)
        self.values = {}

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n.name] = out
        return out


def _independent_codes(x, lo, hi, bits, signed):
    """Quantize with an independent restatement of the documented scheme."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    eps = torch.finfo(torch.float32).eps
    if signed:
        qmax = 2 ** (bits - 1) - 1
        scale = torch.tensor(max(max(-lo, hi) / qmax, eps), dtype=torch.float32)
        return torch.clamp(torch.round(x / scale), -qmax - 1, qmax), scale, torch.tensor(0.0)
    qmax = 2**bits - 1
    scale = torch.tensor(max((hi - lo) / qmax, eps), dtype=torch.float32)
    zp = torch.round(torch.tensor(lo, dtype=torch.float32) / scale)
    return torch.clamp(torch.round(x / scale - zp), 0, qmax), scale, zp


def _weight_codes(w, bits, signed, per_channel=False):
    """Codes, scale and zero point of ``w`` (per output channel: dim 0, each row its range)."""
    if not per_channel:
        return _independent_codes(w, w.min(), w.max(), bits, signed)
    rows = [_independent_codes(r, r.min(), r.max(), bits, signed) for r in w]
    view = (-1,) + (1,) * (w.dim() - 1)
    codes = torch.stack([r[0] for r in rows])
    zp = torch.stack([torch.as_tensor(r[2], dtype=torch.float32) for r in rows]).reshape(view)
    return codes, torch.stack([r[1] for r in rows]), zp


WIDTHS = [(8, 8), (8, 4), (8, 2), (4, 8)]


def _exact_name(widths, signed):
    a, b = widths
    return f"mul{a if a == b else f'{a}x{b}'}{'s' if signed else 'u'}_exact"


def _check_layer(model, x, widths, signed, reference_int, per_channel=False):
    """Convert ``model`` (one layer) with the exact ``bits_a x bits_b`` multiplier, calibrate
    on x, and compare with ``reference_int``."""
    bits, bits_b = widths
    mult = amx.multiplier(_exact_name(widths, signed))
    gm = amx.convert(model, amx.Spec().set_global(mult, per_channel=per_channel))
    (rec,) = amx.layers(gm)
    assert (rec.bits_a, rec.bits_b) == widths and str(rec).split()[3] == (
        f"{bits if bits == bits_b else f'{bits}x{bits_b}'}{'s' if signed else 'u'}"
    )
    quant = {type(q).__name__: q for q in gm.modules() if type(q).__name__.endswith("Quantizer")}
    assert (quant["ActivationQuantizer"].bits, quant["WeightQuantizer"].bits) == widths
    amx.calibrate(gm, [x], progress=False)
    gm.eval()
    cap = _Capture(gm)
    y = cap.run(x)
    (iq,) = [m for m in gm.modules() if isinstance(m, amx.quantizers(gm)[0].__class__)]
    qx, sx, zx = _independent_codes(x, iq.min_val, iq.max_val, bits, signed)
    acc_name = [n for n in cap.values if n.endswith("_lut_gemm")][0]
    acc = cap.values[acc_name]
    expect_acc, sw, bias = reference_int(qx, zx)
    channel_shape = (
        [-1] + [1] * (expect_acc.dim() - 2) if isinstance(model, (nn.Conv1d, nn.Conv2d)) else [-1]
    )
    sw = sw.reshape(channel_shape) if sw.dim() == 1 else sw  # per output channel
    assert torch.equal(acc, expect_acc), (acc - expect_acc).abs().max()
    expect_y = (expect_acc * (sx.double() * sw.double())).float()
    if bias is not None:
        expect_y = expect_y + bias.reshape(channel_shape)
    rel = (y - expect_y).abs().max() / expect_y.abs().max()
    assert rel <= 1e-5
    if min(widths) >= 4:  # close to float (2-bit weights are not)
        assert torch.allclose(y, model.eval()(x), atol=0.2 * float(expect_y.abs().max()))
    return gm


CONV_CASES = [
    dict(in_channels=3, out_channels=8, kernel_size=3, stride=2, padding=1),
    dict(
        in_channels=4,
        out_channels=8,
        kernel_size=(3, 2),
        stride=(1, 2),
        padding=(2, 0),
        dilation=(2, 1),
        bias=False,
    ),
    dict(
        in_channels=8,
        out_channels=8,
        kernel_size=3,
        padding="same",
        groups=8,
        padding_mode="reflect",
    ),
    dict(
        in_channels=6,
        out_channels=4,
        kernel_size=3,
        padding="valid",
        groups=2,
        padding_mode="circular",
    ),
    dict(
        in_channels=4,
        out_channels=6,
        kernel_size=4,
        padding="same",
        dilation=2,
        padding_mode="replicate",
    ),
]


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(
    "case",
    CONV_CASES,
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items() if k != "in_channels"),
)
def test_conv2d_matches_integer_conv(case, signed) -> None:
    _conv2d_case(case, signed, (8, 8), False)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("widths", WIDTHS[1:], ids=lambda w: f"{w[0]}x{w[1]}")
@pytest.mark.parametrize("case", CONV_CASES[:3], ids=["s2p1", "dilated", "depthwise-reflect"])
def test_rectangular_conv2d_matches_integer_conv(case, widths, signed, per_channel) -> None:
    _conv2d_case(case, signed, widths, per_channel)


def _conv2d_case(case, signed, widths, per_channel) -> None:
    conv = nn.Conv2d(**case)
    x = torch.randn(2, case["in_channels"], 9, 10)
    mode = case.get("padding_mode", "zeros")

    def ref(qx, zx):
        qw, sw, zw = _weight_codes(conv.weight.detach(), widths[1], signed, per_channel)
        pad = conv._reversed_padding_repeated_twice if conv.padding != "valid" else [0, 0, 0, 0]
        if mode == "zeros":
            xi = F.pad(qx + zx, pad, value=0.0)  # real zero is integer 0 after removing zx
        else:
            xi = F.pad(qx + zx, pad, mode=mode)
        acc = F.conv2d(
            xi.double(),
            (qw + zw).double(),
            stride=conv.stride,
            dilation=conv.dilation,
            groups=conv.groups,
        )
        return acc, sw, conv.bias

    _check_layer(conv, x, widths, signed, ref, per_channel)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("widths", WIDTHS, ids=lambda w: f"{w[0]}x{w[1]}")
def test_conv1d_matches_integer_conv(widths, signed, per_channel) -> None:
    conv = nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2)
    x = torch.randn(3, 4, 17)

    def ref(qx, zx):
        qw, sw, zw = _weight_codes(conv.weight.detach(), widths[1], signed, per_channel)
        xi = F.pad(qx + zx, (2, 2))
        return (
            F.conv1d(xi.double(), (qw + zw).double(), stride=2, dilation=2, groups=2),
            sw,
            conv.bias,
        )

    _check_layer(conv, x, widths, signed, ref, per_channel)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("widths", WIDTHS, ids=lambda w: f"{w[0]}x{w[1]}")
def test_linear_matches_integer_linear(widths, signed, per_channel) -> None:
    lin = nn.Linear(20, 7)
    x = torch.randn(3, 5, 20)

    def ref(qx, zx):
        qw, sw, zw = _weight_codes(lin.weight.detach(), widths[1], signed, per_channel)
        return (qx + zx).double() @ (qw + zw).double().reshape(7, 20).t(), sw, lin.bias

    _check_layer(lin, x, widths, signed, ref, per_channel)


def test_per_channel_weights_and_lut_accumulator_bit_exact() -> None:
    """The raw LUT accumulator SUM AM(qx, qw) equals an int64 conv of the codes."""
    from appmult_fx.luts.indexing import codes_to_indices

    from appmult_fx.ops.lut_gemm import lut_bmm

    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1))
    x = torch.rand(2, 3, 8, 8)
    gm = amx.convert(model, amx.Spec().set_global("mul8u_exact", per_channel=True))
    amx.calibrate(gm, [x], progress=False)
    gm.eval()
    qx, _, _ = gm.get_submodule("_0_input_quant")(F.pad(x, (1, 1, 1, 1)))
    qw, sw, zw = gm.get_submodule("_0_weight_quant")(model[0].weight)
    assert sw.shape == (5,) and zw.shape == (5,)
    a = codes_to_indices(F.unfold(qx, 3).transpose(1, 2).reshape(1, -1, 27), 8)
    w = codes_to_indices(qw.reshape(5, 27).t().reshape(1, 27, 5), 8)
    acc = lut_bmm(a, w, amx.multiplier("mul8u_exact").table)
    expect = F.conv2d(qx.double(), qw.double()).permute(0, 2, 3, 1).reshape(1, -1, 5)
    assert torch.equal(acc.double(), expect)
