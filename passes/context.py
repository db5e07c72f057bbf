"""Shared machinery for rewriting one layer: node creation, LUT buffers, builder registry.

A *builder* turns one matched layer into explicit nodes. Builders are registered per
(multiplier kind, op kind), e.g. ``("int", "conv2d")``, with :func:`register_builder`.
"""

from __future__ import annotations

import hashlib
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


class LutIntegrityError(ValueError):
    """A LUT buffer whose content differs from its multiplier's table."""


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 over a tensor's dtype, shape and bytes."""
    h = hashlib.sha256(f"{t.dtype} {tuple(t.shape)}\n".encode())
    h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _verify_after_load(store: LutStore, incompatible_keys: Any) -> None:
    store.verify("the loaded state dict")


class LutStore(nn.Module):
    """Holds each distinct multiplier's tables once, as buffers (moved by ``.to()``).

    Each buffer's content hash is recorded when it is added; :meth:`verify` (run after every
    ``load_state_dict`` and before export) refuses a table that no longer matches it, so a
    zeroed or edited table in a checkpoint cannot silently change the model's arithmetic.
    """

    def __init__(self) -> None:
        super().__init__()
        self.expected: dict[str, tuple[str, str]] = {}  # attribute -> (multiplier, digest)
        self.register_load_state_dict_post_hook(_verify_after_load)

    def add(self, mult: Any, tables: dict[str, torch.Tensor]) -> dict[str, str]:
        """Register ``tables`` (suffix -> tensor) for ``mult``; returns suffix -> attribute path."""
        key = f"{safe_name(mult.name)}_{mult.sha256[:8]}"
        out = {}
        for suffix, tensor in tables.items():
            attr = f"{key}_{suffix}"
            if not hasattr(self, attr):
                self.register_buffer(attr, tensor.clone())
                self.expected[attr] = (mult.name, tensor_digest(tensor))
            out[suffix] = f"{LUT_MODULE}.{attr}"
        return out

    def verify(self, where: str) -> None:
        """Raise :class:`LutIntegrityError` unless every table still hashes as recorded."""
        for attr, (name, digest) in self.expected.items():
            got = tensor_digest(getattr(self, attr))
            if got != digest:
                raise LutIntegrityError(
                    f"{where}: LUT buffer {LUT_MODULE}.{attr} does not match multiplier "
                    f"{name!r} (content sha256 {got[:16]}..., expected {digest[:16]}...): the "
                    "table was modified or corrupted; refusing to use it. Load weights saved "
                    "from a model converted with the genuine multiplier"
                )


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
