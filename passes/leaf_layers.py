"""Multiplies hidden inside leaf modules (kept opaque for ``torch.fx``), reported as float layers.

A leaf module's multiplies are not rewritten, but ``amx.layers()`` still lists them (multiplier
``None``) so the approximated share of a model's multiplies is computable. Their multiply
counts come from forward hooks while the example inputs run.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from typing import Any

from torch import fx, nn

from .match import layer_name
from .ops_table import module_op
from .records import LayerRecord

LEAF_KEY = "appmult_leaf_layers"


def leaf_layers(gm: fx.GraphModule) -> dict[str, list[tuple[str, str, nn.Module]]]:
    """For each leaf ``call_module`` node: its inner multiply modules ``(name, op, module)``."""
    found: dict[str, list[tuple[str, str, nn.Module]]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if module_op(module) is not None:
            continue
        inner: list[tuple[str, str, nn.Module]] = []
        for name, sub in module.named_modules():
            if any(_inside(name, n) for n, o, _ in inner if o == "attention"):
                continue  # nn.MultiheadAttention uses its out_proj's weight without calling it
            op = (
                "attention"
                if type(sub) is nn.MultiheadAttention
                else (module_op(sub) or (None, None))[1]
            )
            if op is not None:
                inner.append((name, op, sub))
        name = layer_name(node)
        inner = [(f"{name}.{n}" if n else name, o, m) for n, o, m in inner]
        if inner:
            found[node.name] = inner
    return found


def _inside(name: str, parent: str) -> bool:
    """Whether module path ``name`` lies strictly inside ``parent`` (``""``: the leaf itself)."""
    return name != parent and (parent == "" or name.startswith(f"{parent}."))


def _macs(op: str, module: nn.Module, args: tuple, output: Any) -> int:
    if op == "attention":  # q/k/v/out projections and the two products
        q, k = args[0], args[1]
        e = module.embed_dim
        if q.dim() == 3 and module.batch_first:
            q, k = q.transpose(0, 1), k.transpose(0, 1)
        length, batch, source = q.shape[0], q.shape[1] if q.dim() == 3 else 1, k.shape[0]
        keys = source + (module.bias_k is not None) + bool(module.add_zero_attn)
        return batch * (
            2 * length * e * e + source * e * (module.kdim + module.vdim) + 2 * length * keys * e
        )
    w = module.weight.shape
    if op.startswith("conv_transpose"):
        return args[0].numel() * math.prod(w[1:])
    return output.numel() * math.prod(w[1:])


@contextlib.contextmanager
def counting(
    gm: fx.GraphModule, found: dict[str, list[tuple[str, str, nn.Module]]]
) -> Iterator[dict[tuple[str, str], int]]:
    """Count (while the context is open) the multiplies of every inner layer per leaf call:
    ``(leaf node name, inner layer name) -> count``. A leaf module called by several nodes
    has its calls attributed to them in graph order, each inner module counted once per call.
    The counting hooks are registered before the leaves' own, so a leaf that is itself a layer
    (a leaf ``nn.MultiheadAttention``) is counted before its call ends."""
    counts: dict[tuple[str, str], int] = {}
    active: list[str] = []  # the leaf node whose call is running
    callers: dict[str, list[str]] = {}
    for node in gm.graph.nodes:
        if node.name in found:
            callers.setdefault(str(node.target), []).append(node.name)
    handles = []
    named = {(node, id(m)): (name, op) for node, inner in found.items() for name, op, m in inner}
    for module in {id(m): m for inner in found.values() for _, _, m in inner}.values():

        def hook(m: nn.Module, args: tuple, output: Any) -> None:
            entry = named.get((active[-1], id(m))) if active else None
            if entry is not None:
                key = (active[-1], entry[0])
                counts[key] = counts.get(key, 0) + _macs(entry[1], m, args, output)

        handles.append(module.register_forward_hook(hook))
    for target, nodes in callers.items():
        calls = itertools.count()

        def enter(m: nn.Module, args: tuple, nodes: list[str] = nodes, calls: Any = calls) -> None:
            active.append(nodes[next(calls) % len(nodes)])

        def leave(m: nn.Module, args: tuple, output: Any) -> None:
            active.pop()

        leaf = gm.get_submodule(target)
        handles += [leaf.register_forward_pre_hook(enter), leaf.register_forward_hook(leave)]
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def attach(
    gm: fx.GraphModule,
    found: dict[str, list[tuple[str, str, nn.Module]]],
    counts: dict[tuple[str, str], int] | None,
) -> None:
    """Store float records for the inner layers on their leaf nodes (``node.meta[LEAF_KEY]``);
    ``counts`` is ``None`` when no example ran (then the counts are unknown)."""
    for node in gm.graph.nodes:
        if node.name in found:
            node.meta[LEAF_KEY] = [
                LayerRecord(
                    name, op, macs=None if counts is None else counts.get((node.name, name), 0)
                )
                for name, op, _ in found[node.name]
            ]
