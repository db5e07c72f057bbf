"""Builders for integer multipliers on matmul-like ops and transposed convolutions.

A matmul (``torch.matmul``, ``@``, ``mm``, ``mv``, ``dot``, ``bmm``, ``baddbmm``, ``addmm``,
tensor methods alike, a batched-matmul ``torch.einsum``, or an attention's ``Matmul`` module)
multiplies two activations, so each operand gets its own ``ActivationQuantizer`` (observer)::

    <layer>_a_quant, <layer>_b_quant -> lut_matmul / lut_einsum -> rescale [-> beta*in + alpha*y]

Two 1-D operands (a dot product, ``"i,i->"``) give a 0-d result, as torch does.

The left operand indexes the multiplier's rows (first operand), the right its columns.
A transposed convolution becomes input/weight quantizers -> ``lut_conv_transpose`` -> rescale.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor, fx

from appmult_fx.ops.graph_leaf import graph_leaf
from appmult_fx.ops.int_layers import lut_conv_transpose, lut_einsum, lut_matmul, rescale
from appmult_fx.ops.quantizers import ActivationQuantizer

from .context import Quantized, RewriteContext, register_builder
from .match import LayerSite, einsum_equation, matmul_operands
from .operands import baddbmm_terms, conv_transpose_args
from .records import LayerRecord
from .rewrite_int import weighted_layer
from .spec import Rule


@graph_leaf
def scale_add(inp: Tensor, y: Tensor, beta: float, alpha: float) -> Tensor:
    """``beta * inp + alpha * y``; as in ``torch.baddbmm``, ``beta == 0`` ignores ``inp``."""
    return alpha * y if beta == 0 else beta * inp + alpha * y


def baddbmm_output(ctx: RewriteContext, site: LayerSite, product: fx.Node) -> fx.Node:
    """The layer's output: ``product``, or ``beta * input + alpha * product`` for baddbmm and
    addmm."""
    if site.op not in ("baddbmm", "addmm"):
        return product
    inp, beta, alpha = baddbmm_terms(site)
    return ctx.node(
        "call_function", scale_add, (inp, product, beta, alpha), name=f"{site.name}_add"
    )


def _activation(ctx: RewriteContext, site: LayerSite, rule: Rule, x: Any, tag: str) -> Quantized:
    """Operand ``tag`` (``"a"``: the left one, table rows; ``"b"``: the right one, columns)
    behind an activation quantizer of that side's width."""
    mult = rule.multiplier
    bits = mult.bits_a if tag == "a" else mult.bits_b
    quantizer = ActivationQuantizer(bits, mult.signed, rule.momentum)
    return ctx.quantize(f"{site.name}_{tag}_quant", quantizer, x, f"{site.name}_{tag}")


def _is_parameter(x: Any) -> bool:
    return isinstance(x, fx.Node) and x.op == "get_attr"


def _warn_parameter_on_the_row_side(site: LayerSite, rule: Rule, left: Any, right: Any) -> None:
    """A rectangular multiplier's narrow side is usually the weight's; say so when a parameter
    sits on the left (row) side of a matmul and an activation on the right."""
    mult = rule.multiplier
    if mult.bits_a == mult.bits_b or not _is_parameter(left) or _is_parameter(right):
        return
    warnings.warn(
        f"layer {site.name!r}: the parameter {left.target!r} is the left operand of this "
        f"{site.op}, so with the {mult.widths} multiplier {mult.name!r} it is quantized to "
        f"{mult.bits_a} bits (table rows) and the activation to {mult.bits_b} bits (columns); "
        "write the product with the parameter on the right (e.g. (x.T @ W.T).T or "
        "F.linear(x, W)) to give it the weight side",
        stacklevel=2,
    )


@register_builder("int", "matmul", "bmm", "baddbmm", "addmm", "einsum")
def build_matmul(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a matmul-like node into two activation quantizers -> LUT-GEMM -> ``rescale``."""
    left, right = matmul_operands(site)
    _warn_parameter_on_the_row_side(site, rule, left, right)
    qa = _activation(ctx, site, rule, left, "a")
    qb = _activation(ctx, site, rule, right, "b")
    luts = ctx.tables(site, rule)
    args = (qa.codes, qa.zero_point, qb.codes, qb.zero_point, luts["table"])
    args += (luts.get("grad_a"), luts.get("grad_b"))
    if site.op == "einsum":  # the explicit equation (an implicit output as torch derives it)
        fn, args = lut_einsum, (einsum_equation(site.node), *args)
    else:
        fn = lut_matmul
    acc = ctx.node("call_function", fn, args, name=f"{site.name}_lut_gemm")
    y = ctx.node(
        "call_function",
        rescale,
        (acc, qa.scale, qb.scale, None),
        {"channel_dim": -1},
        name=f"{site.name}_out",
    )
    parts = {
        "product": y.name,
        "quantizers": (qa.module, qb.module),
        "inputs": tuple(getattr(q.source, "name", None) for q in (qa, qb)),
        "tables": {k: str(n.target) for k, n in luts.items()},
    }
    return ctx.finish(site, rule, acc, baddbmm_output(ctx, site, y), parts)


@register_builder("int", "conv_transpose1d", "conv_transpose2d")
def build_conv_transpose(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a transposed conv: quantizers -> ``lut_conv_transpose`` -> ``rescale``."""
    if rule.per_channel:
        raise ValueError(
            f"layer {site.name!r}: per-channel weight quantization is not supported for transposed "
            "convolutions (their weight's dim 0 is the input channel); use per_channel=False"
        )
    a = conv_transpose_args(site)
    geometry = {k: a[k] for k in ("stride", "padding", "output_padding", "dilation", "groups")}
    return weighted_layer(ctx, site, rule, a, a["input"], (lut_conv_transpose, geometry, 1))
