"""Builders for integer multipliers: conv1d / conv2d / linear -> quantize -> LUT-GEMM -> rescale.

Each layer becomes::

    [F.pad]  ->  <layer>_input_quant (ActivationQuantizer)  -> codes, scale, zero_point
    weight   ->  <layer>_weight_quant (WeightQuantizer)     -> codes, scale, zero_point
    lut_conv / lut_linear  (appmult::approx_bmm over the multiplier's table buffers)
    rescale  (x scale * w scale, + bias)
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from appmult_fx.ops.int_layers import lut_conv, lut_linear, rescale
from appmult_fx.ops.quantizers import ActivationQuantizer, WeightQuantizer

from .context import Quantized, RewriteContext, register_builder
from .match import LayerSite
from .operands import conv_args, linear_args, pad_list
from .records import LayerRecord
from .relu_inputs import is_relu_output, relu_arguments
from .spec import Rule


def padded_input(ctx: RewriteContext, site: LayerSite, a: dict[str, Any]) -> Any:
    """The conv's input node, behind an explicit ``F.pad`` node when the conv pads."""
    pads = pad_list(a["padding"], a["kernel"], a["dilation"])
    if not any(pads):
        return a["input"]
    return ctx.node(
        "call_function", F.pad, (a["input"], pads), {"mode": a["mode"]}, name=f"{site.name}_pad"
    )


def quantized_operands(
    ctx: RewriteContext, site: LayerSite, rule: Rule, x: Any, weight: Any, per_channel: bool
) -> tuple[Quantized, Quantized]:
    """The activation ``x`` and the weight (path or node), each behind its quantizer: the
    activation at the multiplier's row width ``bits_a``, the weight at its column width
    ``bits_b`` (the same for square multipliers)."""
    mult, name = rule.multiplier, site.name
    qx = ctx.quantize(
        f"{name}_input_quant",
        ActivationQuantizer(mult.bits_a, mult.signed, rule.momentum),
        x,
        f"{name}_x",
    )
    w = ctx.operand(weight, f"{name}_weight")
    qw = ctx.quantize(
        f"{name}_weight_quant",
        WeightQuantizer(mult.bits_b, mult.signed, per_channel),
        w,
        f"{name}_w",
    )
    return qx, qw


def weighted_layer(
    ctx: RewriteContext,
    site: LayerSite,
    rule: Rule,
    a: dict[str, Any],
    x: Any,
    gemm: tuple[Any, dict[str, Any], int],
    extra: dict[str, Any] | None = None,
) -> LayerRecord:
    """Quantizers -> GEMM op -> ``rescale`` (+ bias) for a layer with a weight; finishes it.

    ``gemm`` is ``(op, its geometry keyword arguments, the output's channel dimension)``;
    ``extra`` more keyword arguments of the op that are not geometry (not recorded).
    """
    fn, geometry, channel_dim = gemm
    qx, qw = quantized_operands(ctx, site, rule, x, a["weight"], rule.per_channel)
    luts = ctx.tables(site, rule)
    acc = ctx.node(
        "call_function",
        fn,
        (
            qx.codes,
            qx.zero_point,
            qw.codes,
            qw.zero_point,
            luts["table"],
            luts.get("grad_a"),
            luts.get("grad_b"),
        ),
        {**geometry, **(extra or {})},
        name=f"{site.name}_lut_gemm",
    )
    bias = ctx.operand(a["bias"], f"{site.name}_bias")
    y = ctx.node(
        "call_function",
        rescale,
        (acc, qx.scale, qw.scale, bias),
        {"channel_dim": channel_dim},
        name=f"{site.name}_out",
    )
    parts = {
        "product": y.name,
        "quantizers": (qx.module, qw.module),
        "inputs": (qx.source.name, qw.source.name),
        "weight": qw.source.name,
        "bias": None if bias is None else bias.name,
        "geometry": dict(geometry),
        "tables": {k: str(n.target) for k, n in luts.items()},
    }
    return ctx.finish(site, rule, acc, y, parts)


@register_builder("int", "conv1d", "conv2d")
def build_conv(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a conv node into pad -> quantizers -> ``lut_conv`` -> ``rescale``; with LUT
    gradients, a conv whose input is a ReLU's output also hands ``lut_conv`` that input
    (unpadded) and its padding, so the input gradient is left 0 where the ReLU discards it."""
    a = conv_args(site)
    geometry = {"stride": a["stride"], "dilation": a["dilation"], "groups": a["groups"]}
    x = padded_input(ctx, site, a)
    # one group: only there does the dA kernel leave out what the ReLU discards
    relu = rule.gradient == "lut" and a["groups"] == 1 and is_relu_output(ctx.gm, a["input"])
    pads = pad_list(a["padding"], a["kernel"], a["dilation"])
    extra = relu_arguments(ctx, a["input"], pads, a["mode"]) if relu else None
    channel_dim = -2 if site.op == "conv1d" else -3  # from the end: batched or unbatched input
    return weighted_layer(ctx, site, rule, a, x, (lut_conv, geometry, channel_dim), extra)


@register_builder("int", "linear")
def build_linear(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a linear node into quantizers -> ``lut_linear`` -> ``rescale``."""
    a = linear_args(site)
    return weighted_layer(ctx, site, rule, a, a["input"], (lut_linear, {}, -1))
