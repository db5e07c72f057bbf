"""Lowering of single ``appmult`` nodes to standard ONNX matches the frozen torch ops exactly,
and freezing a converted model leaves its outputs unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from appmult_fx.luts.indexing import operand_range
from onnx import TensorProto, helper, numpy_helper

import appmult_fx as amx
from appmult_fx.export import torch_ops  # noqa: F401  (registers appmult_export ops)
from appmult_fx.export.freeze import freeze
from appmult_fx.export.lower import lower


def _params(mult, w_shape, per_channel: bool, gen: torch.Generator):
    lo, hi = operand_range(mult.bits_b, mult.signed)  # weight codes: the column width
    codes = torch.randint(lo, hi + 1, w_shape, generator=gen).to(
        torch.int8 if mult.signed else torch.uint8
    )
    channels = w_shape[0] if per_channel else None
    shape = (channels,) if per_channel else ()
    w_scale = torch.rand(shape, generator=gen) * 0.01 + 1e-3
    w_zp = (
        torch.zeros(shape, dtype=torch.int32)
        if mult.signed
        else -torch.randint(0, hi, shape, generator=gen).to(torch.int32)
    )
    x_scale = torch.tensor(0.02)
    x_zp = torch.tensor(0 if mult.signed else -40, dtype=torch.int32)
    return codes, x_scale, x_zp, w_scale, w_zp


def _op_common(mult, layer: str) -> tuple:
    """The frozen ops' trailing arguments: widths, signedness, multiplier name/hash, layer."""
    return (mult.bits_a, mult.bits_b, mult.signed, mult.name, mult.sha256, layer)


def _node_attrs(mult, layer: str, **extra) -> dict:
    """The ``appmult`` node attributes of ``mult`` for ``layer`` (plus conv geometry)."""
    bits_a, bits_b, signed, name, sha, _ = _op_common(mult, layer)
    common = dict(bits_a=bits_a, bits_b=bits_b, signed=int(signed), multiplier=name)
    return extra | common | dict(multiplier_sha256=sha, layer=layer)


def _model(op: str, x_shape, consts, bias, attrs) -> onnx.ModelProto:
    names = ["W", "x_scale", "x_zero_point", "w_scale", "w_zero_point"]
    inits = [numpy_helper.from_array(t.numpy(), n) for n, t in zip(names, consts, strict=True)]
    inputs = ["X", *names]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.numpy(), "B"))
        inputs.append("B")
    node = helper.make_node(op, inputs, ["Y"], name="layer", domain="appmult", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", *x_shape[1:]])],
        [
            helper.make_tensor_value_info(
                "Y", TensorProto.FLOAT, [f"y{i}" for i in range(len(x_shape))]
            )
        ],
        inits,
    )
    return helper.make_model(
        graph,
        ir_version=10,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("appmult", 2)],
    )


def _run_lowered(model: onnx.ModelProto, mult, x: torch.Tensor) -> np.ndarray:
    lowered = lower(model, {mult.sha256: mult.table.numpy()})
    assert all(n.domain in ("", "ai.onnx") for n in lowered.graph.node)
    onnx.checker.check_model(lowered, full_check=True)
    session = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": x.numpy()})[0]


CONV_CASES = [
    # multiplier, x shape, w shape, strides, pads, dilations, group, per_channel, bias
    ("mul8u_trunc4", (2, 3, 9, 8), (4, 3, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 1, False, True),
    ("mul7s_trunc3", (2, 4, 10, 9), (6, 2, 3, 2), [2, 1], [0, 2, 1, 0], [2, 1], 2, True, False),
    ("mul4u_trunc2", (3, 2, 11), (5, 2, 3), [2], [1, 2], [1], 1, True, True),
    ("mul6s_trunc3", (1, 4, 6, 6), (4, 1, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 4, False, True),
    # rectangular: activations at bits_a, weight codes at bits_b
    ("mul8x4u_trunc3", (2, 3, 9, 8), (4, 3, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 1, True, True),
    ("mul8x2s_trunc2", (2, 4, 7, 7), (6, 2, 3, 3), [2, 1], [1, 0, 1, 0], [1, 1], 2, False, True),
    ("mul3x7s_trunc2", (3, 2, 11), (5, 2, 3), [1], [1, 1], [1], 1, True, False),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}-{len(c[1]) - 2}d-g{c[6]}")
def test_lut_conv_lowering_matches_torch_op(case) -> None:
    name, x_shape, w_shape, strides, pads, dilations, group, per_channel, with_bias = case
    mult = amx.multiplier(name)
    gen = torch.Generator().manual_seed(0)
    consts = _params(mult, w_shape, per_channel, gen)
    bias = torch.randn(w_shape[0], generator=gen) if with_bias else None
    x = torch.randn(x_shape, generator=gen) * 2
    expected = torch.ops.appmult_export.lut_conv(
        x,
        *consts,
        bias,
        mult.table,
        strides,
        pads,
        dilations,
        group,
        *_op_common(mult, "layer"),
    )
    attrs = _node_attrs(mult, "layer", strides=strides, pads=pads, dilations=dilations, group=group)
    out = _run_lowered(_model("LutConv", x_shape, consts, bias, attrs), mult, x)
    assert out.shape == tuple(expected.shape)
    np.testing.assert_array_equal(out, expected.numpy())


class _AfterRelu(torch.nn.Module):
    """Padded convs after an ``nn.ReLU`` module and after ``F.relu``: with LUT gradients they
    get ``relu_input`` arguments, which export drops."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.c2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = torch.nn.Conv2d(16, 8, 3, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(torch.relu(self.c2(self.relu(self.c1(x)))))


def test_freeze_of_a_lut_model_equals_that_of_an_ste_model() -> None:
    """The same layers, pads absorbed into the convs and outputs with either gradient mode (the
    ``relu_input`` arguments and the nodes only they use are gone)."""
    torch.manual_seed(0)
    model, x = _AfterRelu(), torch.randn(2, 3, 10, 10)
    mult = amx.with_gradients(amx.multiplier("mul8s_trunc8"))
    frozen = {}
    for gradient in ("ste", "lut"):
        gm = amx.convert(model, amx.Spec().set_global(mult), gradient=gradient)
        amx.calibrate(gm, [x], progress=False)
        frozen[gradient] = freeze(gm.eval())
    (ste_gm, ste_layers), (lut_gm, lut_layers) = frozen["ste"], frozen["lut"]
    assert [layer.geometry for layer in lut_layers] == [layer.geometry for layer in ste_layers]
    assert [layer.geometry["pads"] for layer in lut_layers] == [[1] * 4, [1] * 4, [2] * 4]
    targets = [str(n.target) for n in lut_gm.graph.nodes]
    assert targets == [str(n.target) for n in ste_gm.graph.nodes]
    assert not any("pad" in t or "unless_hooked" in t for t in targets)
    with torch.no_grad():
        assert torch.equal(lut_gm(x), ste_gm(x))


@pytest.mark.parametrize(
    "name,x_shape,per_channel,with_bias",
    [
        ("mul8u_trunc4", (3, 7), True, True),
        ("mul8s_trunc4", (2, 3, 7), False, False),
        ("mul5u_trunc2", (4, 7), False, True),
        ("mul8x4u_trunc3", (3, 7), True, True),
        ("mul8x4s_trunc2", (2, 3, 7), False, True),
        ("mul4x8u_trunc2", (4, 7), True, False),
    ],
)
def test_lut_gemm_lowering_matches_torch_op(name, x_shape, per_channel, with_bias) -> None:
    mult = amx.multiplier(name)
    gen = torch.Generator().manual_seed(1)
    consts = _params(mult, (5, 7), per_channel, gen)
    bias = torch.randn(5, generator=gen) if with_bias else None
    x = torch.randn(x_shape, generator=gen) * 2
    expected = torch.ops.appmult_export.lut_linear(
        x,
        *consts,
        bias,
        mult.table,
        *_op_common(mult, "fc"),
    )
    attrs = _node_attrs(mult, "fc")
    out = _run_lowered(_model("LutGemm", x_shape, consts, bias, attrs), mult, x)
    np.testing.assert_array_equal(out, expected.numpy())


def test_lowering_an_unknown_multiplier_fails() -> None:
    mult = amx.multiplier("mul8u_exact")
    consts = _params(mult, (5, 7), False, torch.Generator().manual_seed(2))
    attrs = dict(
        bits_a=8, bits_b=8, signed=0, multiplier="nope", multiplier_sha256="f" * 64, layer="fc"
    )
    with pytest.raises(ValueError, match="uses multiplier 'nope'"):
        lower(_model("LutGemm", (2, 7), consts, None, attrs), {mult.sha256: mult.table.numpy()})


class _Mixed(torch.nn.Module):
    """Conv1d, reflect-padded strided dilated grouped conv2d, linear: every freeze path."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv1d(4, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(
            8, 8, 3, stride=2, padding=2, dilation=2, groups=2, padding_mode="reflect"
        )
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x)).unsqueeze(-1).expand(-1, -1, -1, 6)
        return self.fc(torch.relu(self.c2(y)).mean((2, 3)))


def test_freeze_keeps_outputs_bit_exact() -> None:
    torch.manual_seed(0)
    spec = (
        amx.Spec()
        .set_global("mul8s_trunc4")
        .set_module_name("c2", "mul6u_trunc3", per_channel=True)
    )
    gm = amx.convert(_Mixed(), spec, gradient="ste")
    amx.calibrate(gm, [torch.randn(3, 4, 12)], progress=False)
    gm.eval()
    frozen, layers = freeze(gm)
    assert [layer.name for layer in layers] == ["c1", "c2", "fc"]
    assert [layer.geometry.get("pads") for layer in layers] == [
        [1, 1],
        [0, 0, 0, 0],
        None,
    ]  # reflect pad stays outside
    x = torch.randn(5, 4, 12)
    with torch.no_grad():
        assert torch.equal(frozen(x), gm(x))
    assert not any("quant" in name for name, _ in frozen.named_modules())


@pytest.mark.parametrize(
    "name", ["mul8u_trunc4", "mul6s_trunc3", "mul8x4u_trunc2", "mul6x3s_trunc2"]
)
def test_lut_matmul_lowering_matches_torch_op(name: str) -> None:
    """Two activations with broadcast batch dimensions: [2, 1, 3, 7] @ [4, 7, 5]."""
    mult = amx.multiplier(name)
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 1, 3, 7, generator=gen), torch.randn(4, 7, 5, generator=gen)
    zero = 0 if mult.signed else -30
    consts = [
        torch.tensor(0.03),
        torch.tensor(zero, dtype=torch.int32),
        torch.tensor(0.05),
        torch.tensor(zero // 2, dtype=torch.int32),
    ]
    expected = torch.ops.appmult_export.lut_matmul(
        a,
        b,
        *consts,
        mult.table,
        *_op_common(mult, "mm"),
    )
    names = ["a_scale", "a_zero_point", "b_scale", "b_zero_point"]
    attrs = _node_attrs(mult, "mm")
    node = helper.make_node(
        "LutMatMul", ["A", "B", *names], ["Y"], name="mm", domain="appmult", **attrs
    )
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("A", TensorProto.FLOAT, list(a.shape)),
            helper.make_tensor_value_info("B", TensorProto.FLOAT, list(b.shape)),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, list(expected.shape))],
        [numpy_helper.from_array(t.numpy(), n) for n, t in zip(names, consts, strict=True)],
    )
    model = helper.make_model(
        graph,
        ir_version=10,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("appmult", 2)],
    )
    lowered = lower(model, {mult.sha256: mult.table.numpy()})
    onnx.checker.check_model(lowered, full_check=True)
    session = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"A": a.numpy(), "B": b.numpy()})[0]
    np.testing.assert_array_equal(out, expected.numpy())


def test_frozen_ops_pass_opcheck() -> None:
    mult = amx.multiplier("mul6s_trunc3")
    gen = torch.Generator().manual_seed(4)
    common = _op_common(mult, "layer")
    conv = _params(mult, (4, 2, 3, 3), True, gen)
    gemm = _params(mult, (5, 7), False, gen)
    q = [torch.tensor(0.05), torch.tensor(0, dtype=torch.int32)]
    cases = [
        (
            torch.ops.appmult_export.lut_conv.default,
            (
                torch.randn(2, 2, 5, 5, generator=gen),
                *conv,
                torch.randn(4, generator=gen),
                mult.table,
                [1, 1],
                [1, 0, 1, 0],
                [1, 1],
                1,
                *common,
            ),
        ),
        (
            torch.ops.appmult_export.lut_linear.default,
            (torch.randn(3, 7, generator=gen), *gemm, None, mult.table, *common),
        ),
        (
            torch.ops.appmult_export.lut_matmul.default,
            (
                torch.randn(2, 3, 4, generator=gen),
                torch.randn(4, 5, generator=gen),
                *q,
                *q,
                mult.table,
                *common,
            ),
        ),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("portable", [False, True])
def test_exported_linear_40000_of_ones_does_not_wrap(tmp_path, portable: bool) -> None:
    """The LUT sum 40000 * 255 * 255 exceeds int32; the lowered graph sums in int64."""
    k = 40000
    lin = torch.nn.Linear(k, 1)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(-1.0)
    gm = amx.convert(torch.nn.Sequential(lin), amx.Spec().set_global("mul8u_exact"))
    x = torch.ones(2, k)
    amx.calibrate(gm, [x], progress=False)
    out = amx.export(gm.eval(), x, tmp_path, portable=True, progress=False)
    got = amx.load_exported(out, portable=portable)(x)
    s = float(torch.tensor(1.0 / 255, dtype=torch.float32))  # independent: codes 255, exact sum
    expect = torch.tensor(k * 255 * 255 * s * s, dtype=torch.float32) - 1.0
    assert torch.equal(got, expect.expand(2, 1)), (got, expect)


def test_lowering_refuses_a_table_of_other_widths() -> None:
    mult = amx.multiplier("mul8x4u_trunc3")
    consts = _params(mult, (5, 7), False, torch.Generator().manual_seed(5))
    model = _model("LutGemm", (2, 7), consts, None, _node_attrs(mult, "fc"))
    square = amx.multiplier("mul8u_trunc3").table.numpy()  # 256 x 256 under the 8x4 hash
    with pytest.raises(ValueError, match=r"table has shape \(256, 256\).*need \(256, 16\)"):
        lower(model, {mult.sha256: square})
