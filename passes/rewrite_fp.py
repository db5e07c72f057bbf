"""Builders for floating-point multipliers (``mult.kind == "fp"``): no quantizers, only the cast.

Each layer becomes ``[F.pad] -> fp_conv1d / fp_conv2d / fp_linear / fp_matmul`` over the
multiplier's mantissa-table buffer; the operands are cast to (1, 8, m) inside the op and every
multiply of the forward pass (and of the backward pass with ``backward="approximate"``) reads
the table. ``baddbmm`` keeps its ``beta * input + alpha * (a @ b)`` as exact float arithmetic.
"""

from __future__ import annotations

from typing import Any

from ..ops.fp_layers import fp_conv1d, fp_conv2d, fp_linear, fp_matmul
from .context import RewriteContext, register_builder
from .match import LayerSite, layer_macs, matmul_operands
from .records import LayerRecord
from .rewrite_int import _conv_args, _linear_args, _operand, padded_input
from .rewrite_matmul import scale_add
from .spec import Rule


def _table(ctx: RewriteContext, site: LayerSite, rule: Rule) -> Any:
    mult = rule.multiplier
    return ctx.lut_attrs(mult, {"mantissa_table": mult.mantissa_table}, f"{site.name}_lut")[
        "mantissa_table"
    ]


def _finish(ctx: RewriteContext, site: LayerSite, rule: Rule, node: Any, out: Any) -> LayerRecord:
    mult = rule.multiplier
    record = LayerRecord(
        site.name,
        site.op,
        mult,
        mult.bits,
        True,
        rule.backward,
        False,
        layer_macs(site),
        [node.name],
    )
    node.meta["appmult"] = record
    site.node.replace_all_uses_with(out)
    ctx.graph.erase_node(site.node)
    return record


@register_builder("fp", "conv1d", "conv2d")
def build_fp_conv(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a conv node into ``[F.pad] -> fp_conv1d/fp_conv2d`` (bias added exactly)."""

    a = _conv_args(ctx.gm, site)
    x = padded_input(ctx, site, a)
    weight = _operand(ctx, a["weight"], f"{site.name}_weight")
    bias = None if a["bias"] is None else _operand(ctx, a["bias"], f"{site.name}_bias")
    fn = fp_conv1d if site.op == "conv1d" else fp_conv2d
    kwargs = {
        "stride": a["stride"],
        "padding": 0,
        "dilation": a["dilation"],
        "groups": a["groups"],
        "rounding": rule.multiplier.rounding,
        "backward": rule.backward,
    }
    node = ctx.node(
        "call_function",
        fn,
        (x, weight, bias, _table(ctx, site, rule)),
        kwargs,
        name=f"{site.name}_fp_gemm",
    )
    return _finish(ctx, site, rule, node, node)


@register_builder("fp", "linear")
def build_fp_linear(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a linear node into ``fp_linear``."""
    a = _linear_args(site)
    weight = _operand(ctx, a["weight"], f"{site.name}_weight")
    bias = None if a["bias"] is None else _operand(ctx, a["bias"], f"{site.name}_bias")
    kwargs = {"rounding": rule.multiplier.rounding, "backward": rule.backward}
    node = ctx.node(
        "call_function",
        fp_linear,
        (a["input"], weight, bias, _table(ctx, site, rule)),
        kwargs,
        name=f"{site.name}_fp_gemm",
    )
    return _finish(ctx, site, rule, node, node)


@register_builder("fp", "matmul", "bmm", "baddbmm")
def build_fp_matmul(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a matmul-like node into ``fp_matmul`` (left operand = the table's rows)."""
    left, right = matmul_operands(site)
    kwargs = {"rounding": rule.multiplier.rounding, "backward": rule.backward}
    node = ctx.node(
        "call_function",
        fp_matmul,
        (left, right, _table(ctx, site, rule)),
        kwargs,
        name=f"{site.name}_fp_gemm",
    )
    out = node
    if site.op == "baddbmm":
        args, kw = list(site.node.args) + [None] * 3, site.node.kwargs
        inp = kw.get("input", args[0])
        out = ctx.node(
            "call_function",
            scale_add,
            (inp, node, kw.get("beta", 1), kw.get("alpha", 1)),
            name=f"{site.name}_add",
        )
    return _finish(ctx, site, rule, node, out)
