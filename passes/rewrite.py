"""The rewrite pass: every assigned layer becomes explicit quantize -> LUT-GEMM nodes."""

from __future__ import annotations

from torch import fx

# Builders register themselves per (multiplier kind, op kind) on import: integer multipliers
# in rewrite_int (conv, linear) and rewrite_matmul (matmul-like, transposed conv); floating-
# point multipliers (kind == "fp") in rewrite_fp.
from . import (
    rewrite_fp,  # noqa: F401
    rewrite_int,  # noqa: F401
    rewrite_matmul,  # noqa: F401
)
from .context import BUILDERS, RewriteContext
from .match import LayerSite, layer_macs
from .records import META_KEY, LayerRecord
from .spec import Rule


def rewrite(gm: fx.GraphModule, assignments: list[tuple[LayerSite, Rule | None]]) -> fx.GraphModule:
    """Rewrite each ``(site, rule)``; float layers (no rule / no multiplier) get a record only.

    Each builder ends with :meth:`RewriteContext.finish`, which stores the record it returns
    on the layer's GEMM node (``node.meta["appmult"]``).
    """
    ctx = RewriteContext(gm)
    for site, rule in assignments:
        if rule is None or rule.multiplier is None:
            site.node.meta[META_KEY] = LayerRecord(
                site.name, site.op, macs=layer_macs(site), nodes=[site.node.name]
            )
            continue
        kind = rule.multiplier.kind
        builder = BUILDERS.get((kind, site.op))
        if builder is None:
            supported = sorted(op for k, op in BUILDERS if k == kind)
            raise ValueError(
                f"layer {site.name!r}: op {site.op!r} is not supported with {kind} multipliers "
                f"(supported: {supported}); keep it float with "
                f"spec.set_module_name({site.name!r}, None)"
            )
        with gm.graph.inserting_before(site.node):
            builder(ctx, site, rule)
    gm.graph.lint()
    gm.recompile()
    return gm
