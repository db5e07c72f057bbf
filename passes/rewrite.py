"""The rewrite pass: every assigned layer becomes explicit quantize -> LUT-GEMM nodes."""

from __future__ import annotations

import warnings

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
from .relu_inputs import own_hooks
from .spec import Rule


def _warn_hooked_modules(gm: fx.GraphModule, sites: list[LayerSite]) -> None:
    """One warning naming the converted layer modules that have hooks: the converted model
    computes those layers with explicit nodes, so their hooks no longer run."""
    hooked = [
        s.name
        for s in sites
        if s.node.op == "call_module" and own_hooks(gm.get_submodule(str(s.node.target)))
    ]
    if hooked:
        warnings.warn(
            f"appmult-fx: hooks registered on {', '.join(map(repr, hooked))} do not run in the "
            "converted model (each converted layer is explicit quantize -> LUT-GEMM nodes, no "
            "longer a call of that module); register them on the converted model, or keep "
            "those layers float with spec.set_module_name(name, None)",
            stacklevel=3,
        )


def rewrite(gm: fx.GraphModule, assignments: list[tuple[LayerSite, Rule | None]]) -> fx.GraphModule:
    """Rewrite each ``(site, rule)``; float layers (no rule / no multiplier) get a record only.

    Each builder ends with :meth:`RewriteContext.finish`, which stores the record it returns
    on the layer's GEMM node (``node.meta["appmult"]``).
    """
    ctx = RewriteContext(gm)
    _warn_hooked_modules(gm, [s for s, r in assignments if r is not None and r.multiplier])
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
