"""Builders for floating-point multipliers (``mult.kind == "fp"``): no quantizers, only the cast.

Each layer becomes ``[F.pad] -> fp_conv1d / fp_conv2d / fp_linear / fp_matmul`` over the
multiplier's mantissa-table buffer; the operands are cast to (1, 8, m) inside the op and every
multiply of the forward pass (and of the backward pass with ``backward="approximate"``) reads
the table. ``baddbmm`` keeps its ``beta * input + alpha * (a @ b)`` as exact float arithmetic.
"""

from __future__ import annotations

from typing import Any

from appmult_fx.ops.fp_layers import fp_conv1d, fp_conv2d, fp_linear, fp_matmul

from .context import RewriteContext, register_builder
from .match import LayerSite, matmul_operands
from .operands import conv_args, linear_args
from .records import LayerRecord
from .rewrite_int import padded_input
from .rewrite_matmul import baddbmm_output
from .spec import Rule


def _fp_layer(
    ctx: RewriteContext,
    site: LayerSite,
    rule: Rule,
    fn: Any,
    operands: tuple[Any, ...],
    geometry: dict[str, Any],
) -> LayerRecord:
    """``fn(*operands, table, **geometry, rounding, backward)`` over the mantissa table; finish."""
    luts = ctx.tables(site, rule)
    kwargs = geometry | {"rounding": rule.multiplier.rounding, "backward": rule.backward}
    node = ctx.node(
        "call_function",
        fn,
        (*operands, luts["mantissa_table"]),
        kwargs,
        name=f"{site.name}_fp_gemm",
    )
    parts = {
        "inputs": tuple(getattr(x, "name", None) for x in operands[:2]),
        "geometry": dict(geometry),
        "tables": {k: str(n.target) for k, n in luts.items()},
    }
    if site.op in ("conv1d", "conv2d", "linear"):
        parts |= {"weight": operands[1].name, "bias": getattr(operands[2], "name", None)}
    return ctx.finish(site, rule, node, baddbmm_output(ctx, site, node), parts)


def _weighted(ctx: RewriteContext, site: LayerSite, a: dict[str, Any], x: Any) -> tuple:
    weight = ctx.operand(a["weight"], f"{site.name}_weight")
    return x, weight, ctx.operand(a["bias"], f"{site.name}_bias")


@register_builder("fp", "conv1d", "conv2d")
def build_fp_conv(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a conv node into ``[F.pad] -> fp_conv1d/fp_conv2d`` (bias added exactly)."""
    a = conv_args(site)
    operands = _weighted(ctx, site, a, padded_input(ctx, site, a))
    fn = fp_conv1d if site.op == "conv1d" else fp_conv2d
    geometry = {"stride": a["stride"], "padding": 0, "dilation": a["dilation"]}
    return _fp_layer(ctx, site, rule, fn, operands, geometry | {"groups": a["groups"]})


@register_builder("fp", "linear")
def build_fp_linear(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a linear node into ``fp_linear``."""
    a = linear_args(site)
    return _fp_layer(ctx, site, rule, fp_linear, _weighted(ctx, site, a, a["input"]), {})


@register_builder("fp", "matmul", "bmm", "baddbmm", "addmm")
def build_fp_matmul(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a matmul-like node into ``fp_matmul`` (left operand = the table's rows)."""
    return _fp_layer(ctx, site, rule, fp_matmul, matmul_operands(site), {})
