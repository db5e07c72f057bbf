"""Builders for integer multipliers on matmul-like ops and transposed convolutions.

A matmul (``torch.matmul``, ``@``, ``Tensor.matmul``, ``torch.bmm``, ``torch.baddbmm``, a
batched-matmul ``torch.einsum``, or an attention's ``Matmul`` module) multiplies two
activations, so each operand gets its own ``ActivationQuantizer`` (observer)::

    <layer>_a_quant, <layer>_b_quant -> lut_matmul / lut_einsum -> rescale [-> beta*in + alpha*y]

The left operand indexes the multiplier's rows (first operand), the right its columns.
A transposed convolution becomes input/weight quantizers -> ``lut_conv_transpose`` -> rescale.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..ops.int_layers import lut_conv_transpose, lut_einsum, lut_matmul, rescale
from ..ops.quantizers import ActivationQuantizer, WeightQuantizer
from .context import RewriteContext, register_builder
from .match import LayerSite, matmul_operands
from .records import LayerRecord
from .rewrite_int import _record, _tuple
from .spec import Rule


def _lut_nodes(ctx: RewriteContext, site: LayerSite, rule: Rule) -> tuple[Any, Any, Any]:
    """``get_attr`` nodes for the table and (``gradient="lut"``) the gradient tables."""
    mult = rule.multiplier
    tables = {"table": mult.table}
    if rule.gradient == "lut":
        if not mult.has_gradients:
            raise ValueError(
                f"layer {site.name!r}: multiplier {mult.name!r} has no gradient LUTs; use "
                "gradient='ste' or attach them with amx.with_gradients(mult, window)"
            )
        tables |= {"grad_a": mult.grad_a, "grad_b": mult.grad_b}
    luts = ctx.lut_attrs(mult, tables, f"{site.name}_lut")
    return luts["table"], luts.get("grad_a"), luts.get("grad_b")


def _activation(
    ctx: RewriteContext, site: LayerSite, rule: Rule, x: Any, tag: str
) -> tuple[Any, Any, Any, str]:
    mult = rule.multiplier
    q = ctx.add_module(
        f"{site.name}_{tag}_quant", ActivationQuantizer(mult.bits, mult.signed, rule.momentum)
    )
    codes, scale, zp = ctx.unpack3(ctx.node("call_module", q, (x,), name=q), f"{site.name}_{tag}")
    return codes, scale, zp, q


def scale_add(inp: Tensor, y: Tensor, beta: float, alpha: float) -> Tensor:
    """``beta * inp + alpha * y``; as in ``torch.baddbmm``, ``beta == 0`` ignores ``inp``."""
    return alpha * y if beta == 0 else beta * inp + alpha * y


@register_builder("int", "matmul", "bmm", "baddbmm", "einsum")
def build_matmul(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a matmul-like node into two activation quantizers -> LUT-GEMM -> ``rescale``."""
    left, right = matmul_operands(site)
    qa, sa, za, qmod_a = _activation(ctx, site, rule, left, "a")
    qb, sb, zb, qmod_b = _activation(ctx, site, rule, right, "b")
    table, ga, gb = _lut_nodes(ctx, site, rule)
    if site.op == "einsum":
        args: tuple = (site.node.args[0], qa, za, qb, zb, table, ga, gb)
        acc = ctx.node("call_function", lut_einsum, args, name=f"{site.name}_lut_gemm")
    else:
        acc = ctx.node(
            "call_function",
            lut_matmul,
            (qa, za, qb, zb, table, ga, gb),
            name=f"{site.name}_lut_gemm",
        )
    y = ctx.node(
        "call_function", rescale, (acc, sa, sb, None), {"channel_dim": -1}, name=f"{site.name}_out"
    )
    if site.op == "baddbmm":
        args_, kw = list(site.node.args) + [None] * 3, site.node.kwargs
        inp = kw.get("input", args_[0])
        beta, alpha = kw.get("beta", 1), kw.get("alpha", 1)
        y = ctx.node("call_function", scale_add, (inp, y, beta, alpha), name=f"{site.name}_add")
    record = _record(site, rule, [qmod_a, qmod_b, acc.name])
    acc.meta["appmult"] = record
    site.node.replace_all_uses_with(y)
    ctx.graph.erase_node(site.node)
    return record


def _conv_transpose_args(site: LayerSite) -> dict[str, Any]:
    dims = 1 if site.op == "conv_transpose1d" else 2
    if site.module is not None:
        m = site.module
        if len(site.node.args) > 1 or site.node.kwargs.get("output_size") is not None:
            raise ValueError(
                f"layer {site.name!r}: ConvTranspose with output_size is not supported; set "
                "output_padding on the module instead, or keep it float with "
                f"spec.set_module_name({site.name!r}, None)"
            )
        return {
            "input": site.node.args[0] if site.node.args else site.node.kwargs["input"],
            "weight": f"{site.name}.weight",
            "bias": f"{site.name}.bias" if m.bias is not None else None,
            "stride": _tuple(m.stride, dims),
            "padding": _tuple(m.padding, dims),
            "output_padding": _tuple(m.output_padding, dims),
            "dilation": _tuple(m.dilation, dims),
            "groups": int(m.groups),
        }
    names = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
    kw = dict(zip(names, site.node.args, strict=False)) | dict(site.node.kwargs)
    return {
        "input": kw["input"],
        "weight": kw["weight"],
        "bias": kw.get("bias"),
        "stride": _tuple(kw.get("stride", 1), dims),
        "padding": _tuple(kw.get("padding", 0), dims),
        "output_padding": _tuple(kw.get("output_padding", 0), dims),
        "dilation": _tuple(kw.get("dilation", 1), dims),
        "groups": int(kw.get("groups", 1)),
    }


@register_builder("int", "conv_transpose1d", "conv_transpose2d")
def build_conv_transpose(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a transposed conv: quantizers -> ``lut_conv_transpose`` -> ``rescale``."""
    if rule.per_channel:
        raise ValueError(
            f"layer {site.name!r}: per-channel weight quantization is not supported for transposed "
            "convolutions (their weight's dim 0 is the input channel); use per_channel=False"
        )
    a = _conv_transpose_args(site)
    mult = rule.multiplier
    qx, sx, zx, qmod_x = _activation(ctx, site, rule, a["input"], "input")
    wq = ctx.add_module(f"{site.name}_weight_quant", WeightQuantizer(mult.bits, mult.signed, False))
    w = (
        ctx.get_attr(a["weight"], f"{site.name}_weight")
        if isinstance(a["weight"], str)
        else a["weight"]
    )
    qw, sw, zw = ctx.unpack3(ctx.node("call_module", wq, (w,), name=wq), f"{site.name}_w")
    table, ga, gb = _lut_nodes(ctx, site, rule)
    geometry = {k: a[k] for k in ("stride", "padding", "output_padding", "dilation", "groups")}
    acc = ctx.node(
        "call_function",
        lut_conv_transpose,
        (qx, zx, qw, zw, table, ga, gb),
        geometry,
        name=f"{site.name}_lut_gemm",
    )
    bias = a["bias"]
    if isinstance(bias, str):
        bias = ctx.get_attr(bias, f"{site.name}_bias")
    y = ctx.node(
        "call_function", rescale, (acc, sx, sw, bias), {"channel_dim": 1}, name=f"{site.name}_out"
    )
    record = _record(site, rule, [qmod_x, wq, acc.name])
    acc.meta["appmult"] = record
    site.node.replace_all_uses_with(y)
    ctx.graph.erase_node(site.node)
    return record
