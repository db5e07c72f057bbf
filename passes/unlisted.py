"""Multiplies no layer record lists, found by counting what the example inputs compute.

The matcher knows multiply layers by name (``nn.Conv2d``, ``torch.matmul``, ...) and leaf
modules by the layer modules inside them. A multiply reached any other way (a functional
``F.linear`` inside a leaf module, a torchvision op wrapped with ``torch.fx.wrap``, an aten
function the tables do not name) would stay float without a word. While the example inputs
run, :class:`CountingShapeProp` counts each node's multiply-accumulates with torch's own
``FlopCounterMode``; :func:`report_unlisted` then gives whatever the records of a node do not
account for a float record (op ``"other"``) and names those nodes in one warning.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils.flop_counter import FlopCounterMode

from .leaf_layers import LEAF_KEY
from .match import layer_name
from .records import META_KEY, LayerRecord

SEEN_KEY = "appmult_seen_macs"  # node.meta: multiply-accumulates counted in the example run


def _deform_conv2d_flops(
    input_shape: Any, weight_shape: Any, *args: Any, out_shape: Any, **kwargs: Any
) -> int:
    """torchvision's deform_conv2d: one multiply-accumulate per output, input channel of its
    group and kernel tap (the sampling's interpolation left out), as for a convolution."""
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def _custom_flops() -> dict[Any, Any]:
    """Flop formulas for the multiplying ops torch's counter does not know (torchvision's)."""
    import torchvision.ops  # noqa: F401 - registers torch.ops.torchvision

    return {torch.ops.torchvision.deform_conv2d: _deform_conv2d_flops}


class CountingShapeProp(ShapeProp):
    """``ShapeProp`` that also stores each call's multiply-accumulates (``FlopCounterMode``'s
    floating-point operations / 2) in ``node.meta[SEEN_KEY]``."""

    def run_node(self, n: fx.Node) -> Any:
        """Run ``n`` (and record its shape) under a flop counter."""
        if n.op not in ("call_module", "call_function", "call_method"):
            return super().run_node(n)
        with FlopCounterMode(display=False, custom_mapping=_custom_flops()) as counter:
            out = super().run_node(n)
        n.meta[SEEN_KEY] = counter.get_total_flops() // 2
        return out


def report_unlisted(gm: fx.GraphModule) -> list[LayerRecord]:
    """Give every node's multiplies that its records do not list a float record (a record
    without a count takes the count seen), warn once naming them, and return the new records.
    Nodes the example inputs did not reach are left as they are."""
    added: list[LayerRecord] = []
    for node in gm.graph.nodes:
        seen = node.meta.pop(SEEN_KEY, 0)
        if not seen:
            continue
        record: LayerRecord | None = node.meta.get(META_KEY)
        inner = node.meta.get(LEAF_KEY, [])
        listed = sum(r.macs or 0 for r in inner)
        if record is not None and record.macs is None:
            node.meta[META_KEY] = dataclasses.replace(record, macs=max(seen - listed, 0))
            continue
        if record is not None:
            listed += record.macs or 0
        if seen > listed:
            name = layer_name(node) if record is None else f"{record.name}:other"
            extra = LayerRecord(name, "other", macs=seen - listed, nodes=[node.name])
            node.meta[LEAF_KEY] = [*inner, extra]
            added.append(extra)
    if added:
        named = ", ".join(f"{r.name!r} ({r.macs} MACs)" for r in added[:6])
        more = ", ..." if len(added) > 6 else ""
        warnings.warn(
            f"appmult-fx: {len(added)} call(s) multiply with no conv, linear, matmul or "
            f"attention layer that convert knows ({named}{more}): "
            "they stay float (op 'other' in amx.layers). Make them traceable layers (or "
            "modules such as nn.Linear inside a leaf module) to approximate them.",
            stacklevel=3,
        )
    return added
