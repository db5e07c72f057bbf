"""Find the multiply layers of a traced graph and name them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from appmult_fx.ops.int_layers import einsum_as_bmm

from .ops_table import FUNCTION_OPS, FUNCTION_SPELLINGS, module_op


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
    macs: int | None = None  # filled by find_layers (before any rewrite changes the operands)


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
            found = module_op(module)
            if found:
                sites.append(LayerSite(node, str(node.target), found[1], found[0], module))
        elif node.op in ("call_function", "call_method"):
            fn = (
                FUNCTION_SPELLINGS.get(node.target, node.target) if _hashable(node.target) else None
            )
            if fn not in FUNCTION_OPS or (
                node.op == "call_method" and node.target not in FUNCTION_SPELLINGS
            ):
                continue
            if fn is torch.einsum and _einsum_equation(node) is None:
                continue  # not a two-operand batched matmul: left as it is
            parent = _enclosing_path(node)
            name = f"{parent}.{node.name}" if parent else node.name
            sites.append(LayerSite(node, name, FUNCTION_OPS[fn], fn))
    for site in sites:
        site.macs = layer_macs(site)
    return sites


def _hashable(target: Any) -> bool:
    try:
        hash(target)
    except TypeError:
        return False
    return True


def _einsum_equation(node: fx.Node) -> str | None:
    eq = node.args[0] if node.args else node.kwargs.get("equation")
    operands = node.args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not isinstance(eq, str) or len(operands) != 2 or einsum_as_bmm(eq) is None:
        return None
    return eq


def matmul_operands(site: LayerSite) -> tuple[Any, Any]:
    """The left (multiplier's first) and right operand of a matmul-like site."""
    node, args, kw = site.node, list(site.node.args), site.node.kwargs
    if site.op == "einsum":
        operands = args[1:]
        return tuple(operands[0]) if len(operands) == 1 else (operands[0], operands[1])  # type: ignore[return-value]
    if site.op == "baddbmm":
        args += [None] * 3
        return kw.get("batch1", args[1]), kw.get("batch2", args[2])
    args += [None] * 2
    first = kw.get("input", args[0]) if node.op != "call_module" else args[0]
    second = kw.get("mat2", kw.get("other", args[1]))
    return first, second


def node_shape(node: Any) -> tuple[int, ...] | None:
    """A node's output shape as recorded by ``ShapeProp`` (``None`` if not recorded)."""
    if isinstance(node, fx.Node) and node.op == "get_attr":
        value = _attr(node)
        return None if value is None else tuple(value.shape)
    meta = getattr(node, "meta", {}).get("tensor_meta")
    return (
        tuple(int(d) for d in meta.shape) if meta is not None and hasattr(meta, "shape") else None
    )


def _attr(node: fx.Node) -> Any:
    obj: Any = node.graph.owning_module
    for part in str(node.target).split("."):
        obj = getattr(obj, part, None)
    return obj if hasattr(obj, "shape") else None


def reduction_length(site: LayerSite) -> int | None:
    """Products summed per output element (K), or ``None`` when shapes are unknown."""
    if site.op in ("matmul", "bmm", "baddbmm"):
        a = node_shape(matmul_operands(site)[0])
        return None if a is None else int(a[-1])
    if (
        site.module is not None
        and hasattr(site.module, "weight")
        and not site.op.startswith("conv_transpose")
    ):
        w = site.module.weight.shape
        return int(math.prod(w[1:]))
    if site.op in ("conv1d", "conv2d", "conv3d", "linear"):
        weight = site.node.kwargs.get(
            "weight", site.node.args[1] if len(site.node.args) > 1 else None
        )
        w = node_shape(weight)
        return None if w is None else int(math.prod(w[1:]))
    return None


def layer_macs(site: LayerSite) -> int | None:
    """Multiplies a layer performs for the shapes ``ShapeProp`` recorded (else ``None``)."""
    if site.macs is not None:
        return site.macs
    if site.op == "einsum":
        a, b = (node_shape(x) for x in matmul_operands(site))
        lhs, rhs = str(site.node.args[0]).replace(" ", "").split("->")[0].split(",")
        if a is None or b is None:
            return None
        sizes = dict(zip(lhs, a)) | {c: max(n, dict(zip(lhs, a)).get(c, 1)) for c, n in zip(rhs, b)}
        return int(math.prod(sizes.values()))
    if site.op.startswith(
        "conv_transpose"
    ):  # every input element meets (O/groups * kernel) weights
        x = site.node.args[0] if site.node.args else site.node.kwargs.get("input")
        w = (
            site.module.weight
            if site.module is not None
            else site.node.kwargs.get("weight", site.node.args[1])
        )
        shape_x, shape_w = node_shape(x), (tuple(w.shape) if hasattr(w, "shape") else node_shape(w))
        return (
            None
            if shape_x is None or shape_w is None
            else int(math.prod(shape_x) * math.prod(shape_w[1:]))
        )
    out, k = node_shape(site.node), reduction_length(site)
    return None if out is None or k is None else int(math.prod(out)) * k
