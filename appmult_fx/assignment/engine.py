"""Evaluate many per-layer assignments on one converted, calibrated model.

The model is converted once with the exact multiplier of the candidates' widths and
calibrated once (shared calibration: every assignment uses the observer ranges of the
exact-quantized model, as a hardware flow with fixed quantization parameters would). An
assignment is then run by an ``fx.Interpreter`` that hands each layer's LUT-GEMM node the
candidate's table instead of the exact one: nothing is re-converted or copied.
:meth:`Engine.run_from` re-runs only the nodes downstream of one layer, reusing the cached
values of every other node (quantized inputs of unchanged layers included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn

from ..convert import calibrate, convert, layers
from ..luts.registry import exact_multiplier
from ..passes.records import LayerRecord
from ..passes.spec import Spec
from .energy import WidthKey, width_key, width_label


def exact_for(key: WidthKey) -> Any:
    """The built-in exact multiplier of widths ``(bits_a, bits_b, signed)`` (``mul8u_exact``,
    ``mul8x4u_exact``)."""
    bits_a, bits_b, signed = key
    return exact_multiplier((bits_a, bits_b), signed)


def common_width(candidates: Sequence[Any]) -> WidthKey:
    """The one ``(bits_a, bits_b, signed)`` all candidates share (refuses a mix)."""
    keys = {width_key(m) for m in candidates}
    if len(keys) != 1:
        raise ValueError(
            f"candidates mix widths {sorted(width_label(k) for k in keys)}; the search shares one "
            "calibrated quantizer per layer, so give candidates of a single width"
        )
    kinds = {getattr(m, "kind", "int") for m in candidates}
    if kinds != {"int"}:
        raise ValueError(f"only integer multipliers can be searched, got kinds {sorted(kinds)}")
    return keys.pop()


class _SwapInterpreter(fx.Interpreter):
    """Runs the graph with some nodes' table argument replaced."""

    def __init__(self, gm: fx.GraphModule, swaps: Mapping[fx.Node, tuple[int, Tensor]]) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.swaps = swaps

    def run_node(self, n: fx.Node) -> Any:
        swap = self.swaps.get(n)
        if swap is None:
            return super().run_node(n)
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            args = list(args)
            args[swap[0]] = swap[1]
            return getattr(self, n.op)(n.target, tuple(args), kwargs)


def _table_arg(node: fx.Node, record: LayerRecord) -> int:
    """Index of the argument of LUT-GEMM ``node`` that fetches the layer's product table (the
    buffer its record's parts name)."""
    path = record.parts.tables.get("table") if record.parts is not None else None
    for i, arg in enumerate(node.args):
        if isinstance(arg, fx.Node) and arg.op == "get_attr" and arg.target == path:
            return i
    raise ValueError(f"node {node.name!r}: no product-table argument found")


class Engine:
    """One exact-quantized, calibrated copy of ``model`` that runs any table assignment."""

    def __init__(
        self,
        model: nn.Module,
        width: WidthKey,
        calibration: Sequence[Tensor],
        example: Tensor,
        *,
        layer_names: Sequence[str] | None = None,
        leaf_modules: Sequence[str | type] = (),
        concrete_args: dict[str, Any] | None = None,
    ) -> None:
        self.width = width
        self.exact = exact_for(width)
        if layer_names is not None and not list(layer_names):
            raise ValueError("layers is empty: name at least one layer to search (or None: all)")
        spec = Spec().set_global(self.exact)
        self.gm = convert(
            model,
            spec,
            gradient="ste",
            example_inputs=example[:1],
            leaf_modules=leaf_modules,
            concrete_args=concrete_args,
        )
        self.records = layers(self.gm)
        approx = [r for r in self.records if r.approximate]
        if not approx:
            floats = [r.name for r in self.records]
            raise ValueError(
                "the model has no layer convert() can give an approximate multiplier "
                "(convertible: conv, linear, matmul and friends"
                + (f"; its multiply layers {floats} stay float" if floats else "")
                + "), so there is nothing to search"
            )
        calibrate(self.gm, list(calibration), progress=False)
        self.gm.eval()
        nodes = {n.name: n for n in self.gm.graph.nodes}
        wanted = [r.name for r in approx] if layer_names is None else list(layer_names)
        known = {r.name for r in approx}
        missing = [n for n in wanted if n not in known]
        if missing:
            raise ValueError(f"layers {missing} are not convertible layers; known: {sorted(known)}")
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"layers names a layer more than once: {wanted}")
        self.layer_names = wanted
        self._gemm: dict[str, fx.Node] = {}
        self._arg: dict[str, int] = {}
        for r in approx:
            if r.name in wanted:
                node = nodes[r.nodes[-1]]
                self._gemm[r.name] = node
                self._arg[r.name] = _table_arg(node, r)

    def macs(self) -> dict[str, int]:
        """MACs per sample of every multiply layer (float layers included)."""
        return {r.name: r.macs for r in self.records}

    def _swaps(self, tables: Mapping[str, Tensor]) -> dict[fx.Node, tuple[int, Tensor]]:
        return {self._gemm[layer]: (self._arg[layer], t) for layer, t in tables.items()}

    @torch.no_grad()
    def run(self, x: Tensor, tables: Mapping[str, Tensor]) -> Tensor:
        """Logits of ``x`` with each named layer's product table replaced (others exact)."""
        return _SwapInterpreter(self.gm, self._swaps(tables)).run(x)

    @torch.no_grad()
    def trace_values(self, x: Tensor) -> dict[fx.Node, Any]:
        """Every node's value for ``x`` on the exact-quantized model (for :meth:`run_from`)."""
        interp = _SwapInterpreter(self.gm, {})
        interp.run(x)
        return dict(interp.env)

    def downstream(self, layer: str) -> set[fx.Node]:
        """The LUT-GEMM node of ``layer`` and every node that depends on it."""
        todo, seen = [self._gemm[layer]], set()
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(n.users)
        return seen

    @torch.no_grad()
    def run_from(
        self, cached: dict[fx.Node, Any], layer: str, table: Tensor, below: set[fx.Node]
    ) -> Tensor:
        """Logits with only ``layer`` swapped, re-running only ``below`` (its
        :meth:`downstream` set) and reusing ``cached`` values for every other node."""
        env = {n: v for n, v in cached.items() if n not in below}
        out_node = next(n for n in self.gm.graph.nodes if n.op == "output")
        env.pop(out_node, None)
        inputs = [cached[n] for n in self.gm.graph.nodes if n.op == "placeholder"]
        return _SwapInterpreter(self.gm, self._swaps({layer: table})).run(*inputs, initial_env=env)


Batches = Sequence[tuple[Tensor, Tensor]]


def accuracy(engine: Engine, tables: Mapping[str, Tensor], batches: Batches) -> float:
    """Accuracy (0..1) of ``engine`` with ``tables`` swapped in, over labelled ``batches``."""
    correct = total = 0
    for x, y in batches:
        correct += int((engine.run(x, tables).argmax(1) == y).sum())
        total += int(y.numel())
    torch._check(total > 0, lambda: "expected at least one labelled example, got none")
    return correct / total
