"""Shared machinery for rewriting one layer: node creation, LUT buffers, builder registry.

A *builder* turns one matched layer into explicit nodes. Builders are registered per
(multiplier kind, op kind), e.g. ``("int", "conv2d")``, with :func:`register_builder`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from .match import LayerSite
from .records import LayerRecord
from .spec import Rule

Builder = Callable[["RewriteContext", LayerSite, Rule], LayerRecord]
BUILDERS: dict[tuple[str, str], Builder] = {}

LUT_MODULE = "appmult_luts"


def register_builder(kind: str, *ops: str) -> Callable[[Builder], Builder]:
    """Decorator registering a builder for multiplier ``kind`` and each op kind in ``ops``."""

    def deco(fn: Builder) -> Builder:
        for op in ops:
            BUILDERS[(kind, op)] = fn
        return fn

    return deco


def safe_name(name: str) -> str:
    """A Python identifier made from a qualified name."""
    out = re.sub(r"\W", "_", name)
    return out if out and not out[0].isdigit() else f"_{out}"


class LutStore(nn.Module):
    """Holds each distinct multiplier's tables once, as buffers (moved by ``.to()``)."""

    def add(self, mult: Any, tables: dict[str, torch.Tensor]) -> dict[str, str]:
        """Register ``tables`` (suffix -> tensor) for ``mult``; returns suffix -> attribute path."""
        key = f"{safe_name(mult.name)}_{mult.sha256[:8]}"
        out = {}
        for suffix, tensor in tables.items():
            attr = f"{key}_{suffix}"
            if not hasattr(self, attr):
                self.register_buffer(attr, tensor.clone())
            out[suffix] = f"{LUT_MODULE}.{attr}"
        return out


class RewriteContext:
    """Node-building helpers bound to one GraphModule."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.graph = gm.graph
        if not hasattr(gm, LUT_MODULE):
            gm.add_submodule(LUT_MODULE, LutStore())
        self.luts: LutStore = getattr(gm, LUT_MODULE)

    def add_module(self, name: str, module: nn.Module) -> str:
        """Attach ``module`` to the GraphModule under a fresh flat name; returns the name."""
        base, i = safe_name(name), 0
        target = base
        while hasattr(self.gm, target):
            i += 1
            target = f"{base}_{i}"
        self.gm.add_submodule(target, module)
        return target

    def node(
        self, op: str, target: Any, args: tuple, kwargs: dict | None = None, name: str | None = None
    ) -> fx.Node:
        """Create a node at the current insertion point."""
        return self.graph.create_node(op, target, args, kwargs or {}, name=name and safe_name(name))

    def unpack3(self, node: fx.Node, prefix: str) -> tuple[fx.Node, fx.Node, fx.Node]:
        """``getitem`` nodes for a quantizer's ``(codes, scale, zero_point)`` output."""
        return tuple(  # type: ignore[return-value]
            self.node("call_function", operator.getitem, (node, i), name=f"{prefix}_{part}")
            for i, part in enumerate(("codes", "scale", "zero_point"))
        )

    def lut_attrs(
        self, mult: Any, tables: dict[str, torch.Tensor], prefix: str
    ) -> dict[str, fx.Node]:
        """``get_attr`` nodes for a multiplier's tables (registered once per multiplier)."""
        paths = self.luts.add(mult, tables)
        return {k: self.node("get_attr", p, (), name=f"{prefix}_{k}") for k, p in paths.items()}

    def get_attr(self, path: str, name: str) -> fx.Node:
        """A ``get_attr`` node for ``path`` (e.g. ``layer1.0.conv1.weight``)."""
        return self.node("get_attr", path, (), name=name)
