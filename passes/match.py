"""Find the multiply layers of a traced graph and name them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import fx, nn

from .ops_table import FUNCTION_OPS, MODULE_OPS


@dataclass
class LayerSite:
    """One multiply layer found in the graph.

    ``name`` is the module's qualified name for module calls; for function calls it is
    ``<enclosing module path>.<node name>`` (just the node name at top level).
    """

    node: fx.Node
    name: str
    op: str
    object_type: Any
    module: nn.Module | None = None


def _module_op(module: nn.Module) -> tuple[type, str] | None:
    for cls in type(module).__mro__:
        if cls in MODULE_OPS:
            return cls, MODULE_OPS[cls]
    return None


def _enclosing_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1]
    return path[0] if isinstance(path, tuple) else str(path)


def find_layers(gm: fx.GraphModule) -> list[LayerSite]:
    """Every conv/linear (and other registered) multiply node, in graph order."""
    modules = dict(gm.named_modules())
    sites: list[LayerSite] = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = modules[node.target]
            found = _module_op(module)
            if found:
                sites.append(LayerSite(node, str(node.target), found[1], found[0], module))
        elif node.op in ("call_function", "call_method") and node.target in FUNCTION_OPS:
            parent = _enclosing_path(node)
            name = f"{parent}.{node.name}" if parent else node.name
            sites.append(LayerSite(node, name, FUNCTION_OPS[node.target], node.target))
    return sites


def node_shape(node: Any) -> tuple[int, ...] | None:
    """A node's output shape as recorded by ``ShapeProp`` (``None`` if not recorded)."""
    meta = getattr(node, "meta", {}).get("tensor_meta")
    return tuple(int(d) for d in meta.shape) if meta is not None and hasattr(meta, "shape") else None


def reduction_length(site: LayerSite) -> int | None:
    """Products summed per output element (K), or ``None`` when shapes are unknown."""
    if site.module is not None and hasattr(site.module, "weight"):
        w = site.module.weight.shape
        return int(math.prod(w[1:]))
    if site.op in ("conv1d", "conv2d", "linear"):
        weight = site.node.kwargs.get("weight", site.node.args[1] if len(site.node.args) > 1 else None)
        w = node_shape(weight)
        return None if w is None else int(math.prod(w[1:]))
    return None


def layer_macs(site: LayerSite) -> int | None:
    """Multiplies a layer performs for the shapes ``ShapeProp`` recorded (else ``None``)."""
    out, k = node_shape(site.node), reduction_length(site)
    return None if out is None or k is None else int(math.prod(out)) * k
