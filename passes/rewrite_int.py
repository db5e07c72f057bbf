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
from torch import fx

from ..ops.int_layers import lut_conv, lut_linear, rescale
from ..ops.quantizers import ActivationQuantizer, WeightQuantizer
from .context import RewriteContext, register_builder
from .match import LayerSite, layer_macs, node_shape
from .records import LayerRecord
from .spec import Rule

_PAD_MODES = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
}


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def _pad_list(padding: Any, kernel: tuple[int, ...] | None, dilation: tuple[int, ...]) -> list[int]:
    """``F.pad`` amounts (last dimension first) for a conv's ``padding`` argument."""
    n = len(dilation)
    if padding == "valid":
        per_dim = [(0, 0)] * n
    elif padding == "same":
        per_dim = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            per_dim.append((total // 2, total - total // 2))
    else:
        per_dim = [(p, p) for p in _tuple(padding, n)]
    out: list[int] = []
    for left, right in reversed(per_dim):
        out += [left, right]
    return out


def _conv_args(gm: fx.GraphModule, site: LayerSite) -> dict[str, Any]:
    """Input, weight, bias and geometry of a conv site (module or functional)."""
    dims = 1 if site.op == "conv1d" else 2
    if site.module is not None:
        m = site.module
        x = site.node.args[0] if site.node.args else site.node.kwargs["input"]
        return {
            "input": x,
            "weight": f"{site.name}.weight",
            "bias": f"{site.name}.bias" if m.bias is not None else None,
            "kernel": tuple(m.kernel_size),
            "stride": _tuple(m.stride, dims),
            "padding": m.padding,
            "dilation": _tuple(m.dilation, dims),
            "groups": int(m.groups),
            "mode": _PAD_MODES[m.padding_mode],
        }
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    kw = dict(zip(names, site.node.args)) | dict(site.node.kwargs)
    wshape = node_shape(kw["weight"])
    padding = kw.get("padding", 0)
    if wshape is None and padding == "same":
        raise ValueError(
            f"layer {site.name!r}: padding='same' needs the weight's shape, which is computed at "
            "run time here; pass example_inputs to convert"
        )
    return {
        "input": kw["input"],
        "weight": kw["weight"],
        "bias": kw.get("bias"),
        "kernel": None if wshape is None else wshape[2:],
        "stride": _tuple(kw.get("stride", 1), dims),
        "padding": padding,
        "dilation": _tuple(kw.get("dilation", 1), dims),
        "groups": int(kw.get("groups", 1)),
        "mode": "constant",
    }


def _linear_args(site: LayerSite) -> dict[str, Any]:
    if site.module is not None:
        x = site.node.args[0] if site.node.args else site.node.kwargs["input"]
        return {
            "input": x,
            "weight": f"{site.name}.weight",
            "bias": f"{site.name}.bias" if site.module.bias is not None else None,
        }
    args = list(site.node.args) + [None] * 3
    kw = site.node.kwargs
    return {
        "input": kw.get("input", args[0]),
        "weight": kw.get("weight", args[1]),
        "bias": kw.get("bias", args[2]),
    }


def _operand(ctx: RewriteContext, ref: Any, name: str) -> Any:
    """A node for a weight/bias given as an attribute path or an existing node."""
    return ctx.get_attr(ref, name) if isinstance(ref, str) else ref


def _quantized_operands(ctx: RewriteContext, site: LayerSite, rule: Rule, x: Any, weight: Any):
    mult = rule.multiplier
    prefix = site.name
    iq = ctx.add_module(
        f"{prefix}_input_quant", ActivationQuantizer(mult.bits, mult.signed, rule.momentum)
    )
    wq = ctx.add_module(
        f"{prefix}_weight_quant", WeightQuantizer(mult.bits, mult.signed, rule.per_channel)
    )
    qx, sx, zx = ctx.unpack3(ctx.node("call_module", iq, (x,), name=iq), f"{prefix}_x")
    w = _operand(ctx, weight, f"{prefix}_weight")
    qw, sw, zw = ctx.unpack3(ctx.node("call_module", wq, (w,), name=wq), f"{prefix}_w")
    if rule.gradient == "lut":
        if not mult.has_gradients:
            raise ValueError(
                f"layer {site.name!r}: multiplier {mult.name!r} has no gradient LUTs; use "
                "gradient='ste' or attach them with amx.with_gradients(mult, window)"
            )
        tables = {"table": mult.table, "grad_a": mult.grad_a, "grad_b": mult.grad_b}
    else:
        tables = {"table": mult.table}
    luts = ctx.lut_attrs(mult, tables, f"{prefix}_lut")
    return (
        (qx, sx, zx),
        (qw, sw, zw),
        (luts["table"], luts.get("grad_a"), luts.get("grad_b")),
        [iq, wq],
    )


def _record(site: LayerSite, rule: Rule, nodes: list[str]) -> LayerRecord:
    mult = rule.multiplier
    return LayerRecord(
        site.name,
        site.op,
        mult,
        mult.bits,
        mult.signed,
        rule.gradient,
        rule.per_channel,
        layer_macs(site),
        nodes,
    )


def padded_input(ctx: RewriteContext, site: LayerSite, a: dict[str, Any]) -> Any:
    """The conv's input node, behind an explicit ``F.pad`` node when the conv pads."""
    pads = _pad_list(a["padding"], a["kernel"], a["dilation"])
    if not any(pads):
        return a["input"]
    return ctx.node(
        "call_function", F.pad, (a["input"], pads), {"mode": a["mode"]}, name=f"{site.name}_pad"
    )


@register_builder("int", "conv1d", "conv2d")
def build_conv(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a conv node into pad -> quantizers -> ``lut_conv`` -> ``rescale``."""
    a = _conv_args(ctx.gm, site)
    x = padded_input(ctx, site, a)
    (qx, sx, zx), (qw, sw, zw), (t, ga, gb), mods = _quantized_operands(
        ctx, site, rule, x, a["weight"]
    )
    acc = ctx.node(
        "call_function",
        lut_conv,
        (qx, zx, qw, zw, t, ga, gb),
        {"stride": a["stride"], "dilation": a["dilation"], "groups": a["groups"]},
        name=f"{site.name}_lut_gemm",
    )
    bias = None if a["bias"] is None else _operand(ctx, a["bias"], f"{site.name}_bias")
    y = ctx.node(
        "call_function", rescale, (acc, sx, sw, bias), {"channel_dim": 1}, name=f"{site.name}_out"
    )
    record = _record(site, rule, [*mods, acc.name])
    acc.meta["appmult"] = record
    site.node.replace_all_uses_with(y)
    ctx.graph.erase_node(site.node)
    return record


@register_builder("int", "linear")
def build_linear(ctx: RewriteContext, site: LayerSite, rule: Rule) -> LayerRecord:
    """Rewrite a linear node into quantizers -> ``lut_linear`` -> ``rescale``."""
    a = _linear_args(site)
    (qx, sx, zx), (qw, sw, zw), (t, ga, gb), mods = _quantized_operands(
        ctx, site, rule, a["input"], a["weight"]
    )
    acc = ctx.node(
        "call_function", lut_linear, (qx, zx, qw, zw, t, ga, gb), name=f"{site.name}_lut_gemm"
    )
    bias = None if a["bias"] is None else _operand(ctx, a["bias"], f"{site.name}_bias")
    y = ctx.node(
        "call_function", rescale, (acc, sx, sw, bias), {"channel_dim": -1}, name=f"{site.name}_out"
    )
    record = _record(site, rule, [*mods, acc.name])
    acc.meta["appmult"] = record
    site.node.replace_all_uses_with(y)
    ctx.graph.erase_node(site.node)
    return record
