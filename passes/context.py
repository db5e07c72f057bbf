"""The rewrite protocol: node creation, LUT buffers, the builder registry and ``finish``.

A *builder* turns one matched layer into explicit nodes. Builders are registered per
(multiplier kind, op kind), e.g. ``("int", "conv2d")``, with :func:`register_builder`. Every
builder follows the same steps: read the operands (:mod:`.operands`), quantize them
(:meth:`RewriteContext.quantize`), fetch the rule's tables (:meth:`RewriteContext.tables`),
add the GEMM and rescale nodes, and end with :meth:`RewriteContext.finish`, which makes the
:class:`LayerRecord`, stores it on the GEMM node and replaces the original layer.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from .match import LayerSite, layer_macs
from .records import META_KEY, LayerParts, LayerRecord
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

    def operand(self, ref: Any, name: str) -> Any:
        """A node for a weight/bias given as an attribute path, or ``ref`` itself (a node/None)."""
        return self.get_attr(ref, name) if isinstance(ref, str) else ref

    def quantize(self, module_name: str, quantizer: nn.Module, x: Any, prefix: str) -> Quantized:
        """Attach ``quantizer`` and call it on ``x``: its codes, scale and zero-point nodes."""
        target = self.add_module(module_name, quantizer)
        codes, scale, zp = self.unpack3(self.node("call_module", target, (x,), name=target), prefix)
        return Quantized(codes, scale, zp, target, x)

    def tables(self, site: LayerSite, rule: Rule) -> dict[str, fx.Node]:
        """``get_attr`` nodes for the tables ``rule`` needs (see :func:`rule_tables`)."""
        return self.lut_attrs(rule.multiplier, rule_tables(site, rule), f"{site.name}_lut")

    def finish(
        self,
        site: LayerSite,
        rule: Rule,
        gemm: fx.Node,
        output: fx.Node,
        parts: dict[str, Any],
    ) -> LayerRecord:
        """Record the rewritten layer, store the record on ``gemm`` and replace the layer.

        ``parts`` are the :class:`LayerParts` fields besides ``gemm`` and ``output``
        (``product`` defaults to the GEMM node).
        """
        mult = rule.multiplier
        quantizers = tuple(parts.get("quantizers", ()))
        fp = mult.kind == "fp"
        record = LayerRecord(
            site.name,
            site.op,
            multiplier=mult,
            bits=mult.bits,
            signed=True if fp else mult.signed,
            gradient=None if fp else rule.gradient,
            backward=rule.backward if fp else None,
            per_channel=not fp and rule.per_channel and parts.get("weight") is not None,
            macs=layer_macs(site),
            nodes=[*quantizers, gemm.name],
            parts=LayerParts(
                gemm=gemm.name,
                output=output.name,
                **{"product": gemm.name} | parts,
            ),
        )
        gemm.meta[META_KEY] = record
        site.node.replace_all_uses_with(output)
        self.graph.erase_node(site.node)
        return record


@dataclass(frozen=True)
class Quantized:
    """The nodes of one quantized operand and the quantizer submodule that made them."""

    codes: fx.Node
    scale: fx.Node
    zero_point: fx.Node
    module: str
    source: Any


def rule_tables(site: LayerSite, rule: Rule) -> dict[str, torch.Tensor]:
    """The tables a layer under ``rule`` reads, by role: ``mantissa_table`` (FP multipliers),
    ``table`` (integer) plus ``grad_a``/``grad_b`` with ``gradient="lut"``."""
    mult = rule.multiplier
    if mult.kind == "fp":
        return {"mantissa_table": mult.mantissa_table}
    if rule.gradient != "lut":
        return {"table": mult.table}
    if not mult.has_gradients:
        raise ValueError(
            f"layer {site.name!r}: multiplier {mult.name!r} has no gradient LUTs; use "
            "gradient='ste' or attach them with amx.with_gradients(mult, window)"
        )
    return {"table": mult.table, "grad_a": mult.grad_a, "grad_b": mult.grad_b}
