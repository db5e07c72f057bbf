"""The ``appmult`` ONNX domain: node schemas and the exporter's translation of the frozen ops.

``appmult.LutConv`` and ``appmult.LutGemm`` (version 2: ``bits_a``/``bits_b``; version 1 had one
``bits``) take, in this order:

``X`` (float activation), ``W`` (integer weight codes: ``uint8`` unsigned / ``int8`` signed),
``x_scale`` (float scalar), ``x_zero_point`` (int32 scalar), ``w_scale`` (float, scalar or
``[O]``), ``w_zero_point`` (int32, scalar or ``[O]``), optional ``B`` (float ``[O]``).

Attributes: ``bits_a`` (activation / left operand width, the table's rows), ``bits_b`` (weight
/ right operand width, its columns; equal for square multipliers), ``signed`` (0/1),
``multiplier`` (name), ``multiplier_sha256`` (the content hash the manifest lists), ``layer``
(the PyTorch layer name); ``LutConv`` adds ``strides``, ``pads`` (ONNX order), ``dilations``,
``group``. ``appmult.LutMatMul`` takes ``A``, ``B`` (float), ``a_scale``, ``a_zero_point``,
``b_scale``, ``b_zero_point`` (scalars) and the common attributes. Semantics: see docs/export.md.
"""

from __future__ import annotations

from typing import Any

import onnxscript
import torch
from onnx.defs import OpSchema

from . import torch_ops  # noqa: F401  (registers torch.ops.appmult_export)
from .domain import DOMAIN, DOMAIN_VERSION, OP_CONV, OP_GEMM, OP_MATMUL

_P = OpSchema.FormalParameter
_A = OpSchema.Attribute
_T = OpSchema.AttrType


def _inputs(matmul: bool) -> list[OpSchema.FormalParameter]:
    if matmul:
        return [
            _P("A", "T", "float left operand (multiplier rows)"),
            _P("B", "T", "float right operand (multiplier columns)"),
            _P("a_scale", "T", "scale of A (scalar)"),
            _P("a_zero_point", "TZ", "zero point of A (scalar)"),
            _P("b_scale", "T", "scale of B (scalar)"),
            _P("b_zero_point", "TZ", "zero point of B (scalar)"),
        ]
    return [
        _P("X", "T", "float activation"),
        _P("W", "TW", "integer weight codes"),
        _P("x_scale", "T", "activation scale (scalar)"),
        _P("x_zero_point", "TZ", "activation zero point (scalar)"),
        _P("w_scale", "T", "weight scale (scalar or per output channel)"),
        _P("w_zero_point", "TZ", "weight zero point (scalar or per output channel)"),
        _P("B", "T", "bias", param_option=OpSchema.FormalParameterOption.Optional),
    ]


def _attributes(conv: bool) -> list[OpSchema.Attribute]:
    attrs = [
        _A("bits_a", _T.INT, "activation (left operand) width: the table's 2**bits_a rows"),
        _A("bits_b", _T.INT, "weight (right operand) width: the table's 2**bits_b columns"),
        _A("signed", _T.INT, "1: two's-complement operands, 0: unsigned"),
        _A("multiplier", _T.STRING, "multiplier name"),
        _A("multiplier_sha256", _T.STRING, "multiplier content hash (manifest table_sha256)"),
        _A("layer", _T.STRING, "the PyTorch layer this node computes"),
    ]
    if conv:
        attrs += [
            _A("strides", _T.INTS, "stride per spatial axis"),
            _A("pads", _T.INTS, "zero padding [begin..., end...] of X"),
            _A("dilations", _T.INTS, "dilation per spatial axis"),
            _A("group", _T.INT, "number of groups"),
        ]
    return attrs


def _schema(name: str, conv: bool, doc: str, matmul: bool = False) -> OpSchema:
    return OpSchema(
        name,
        DOMAIN,
        DOMAIN_VERSION,
        doc,
        inputs=_inputs(matmul),
        outputs=[_P("Y", "T", "float output")],
        type_constraints=[
            ("T", ["tensor(float)"], "float tensors"),
            ("TW", ["tensor(uint8)", "tensor(int8)"], "weight codes"),
            ("TZ", ["tensor(int32)"], "zero points"),
        ],
        attributes=_attributes(conv),
    )


SCHEMAS = {
    OP_CONV: _schema(OP_CONV, True, "Convolution whose products come from a multiplier LUT."),
    OP_GEMM: _schema(OP_GEMM, False, "Y = X W^T (+B) with products from a multiplier LUT."),
    OP_MATMUL: _schema(OP_MATMUL, False, "Y = A @ B with products from a multiplier LUT.", True),
}

_OPSET = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)
_LUT_CONV = onnxscript.values.Op(_OPSET, OP_CONV, SCHEMAS[OP_CONV])
_LUT_GEMM = onnxscript.values.Op(_OPSET, OP_GEMM, SCHEMAS[OP_GEMM])
_LUT_MATMUL = onnxscript.values.Op(_OPSET, OP_MATMUL, SCHEMAS[OP_MATMUL])


def _operands(x, w, xs, xz, ws, wz, bias) -> list[Any]:  # noqa: ANN001
    return [x, w, xs, xz, ws, wz] + ([] if bias is None else [bias])


def _common(
    bits_a: int, bits_b: int, signed: bool, multiplier: str, sha256: str, layer: str
) -> dict[str, Any]:
    return {
        "bits_a": int(bits_a),
        "bits_b": int(bits_b),
        "signed": int(bool(signed)),
        "multiplier": multiplier,
        "multiplier_sha256": sha256,
        "layer": layer,
    }


def _translate_conv(
    x,
    w,
    xs,
    xz,
    ws,
    wz,
    bias,
    table,
    strides,
    pads,
    dilations,
    group,
    bits_a,
    bits_b,
    signed,
    multiplier,
    multiplier_sha256,
    layer,
):  # noqa: ANN001, ANN202
    return _LUT_CONV(
        *_operands(x, w, xs, xz, ws, wz, bias),
        strides=list(strides),
        pads=list(pads),
        dilations=list(dilations),
        group=int(group),
        **_common(bits_a, bits_b, signed, multiplier, multiplier_sha256, layer),
    )


def _translate_gemm(
    x, w, xs, xz, ws, wz, bias, table, bits_a, bits_b, signed, multiplier, multiplier_sha256, layer
):  # noqa: ANN001, ANN202
    return _LUT_GEMM(
        *_operands(x, w, xs, xz, ws, wz, bias),
        **_common(bits_a, bits_b, signed, multiplier, multiplier_sha256, layer),
    )


def _translate_matmul(
    a, b, sa, za, sb, zb, table, bits_a, bits_b, signed, multiplier, multiplier_sha256, layer
):  # noqa: ANN001, ANN202
    return _LUT_MATMUL(
        a,
        b,
        sa,
        za,
        sb,
        zb,
        **_common(bits_a, bits_b, signed, multiplier, multiplier_sha256, layer),
    )


def translation_table() -> dict[Any, Any]:
    """``custom_translation_table`` for ``torch.onnx.export``: frozen op -> ``appmult`` node.

    The frozen ops' ``table`` operand is not translated: the node names its multiplier.
    """
    return {
        torch.ops.appmult_export.lut_conv.default: _translate_conv,
        torch.ops.appmult_export.lut_linear.default: _translate_gemm,
        torch.ops.appmult_export.lut_matmul.default: _translate_matmul,
    }
