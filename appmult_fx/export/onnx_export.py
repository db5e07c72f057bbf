"""Frozen GraphModule -> ONNX model with one ``appmult`` node per approximate layer.

``torch.onnx.export(dynamo=True)`` exports the standard layers; the frozen ops map to
``appmult.LutConv`` / ``appmult.LutGemm`` through a custom translation table. Afterwards each
custom node is renamed to its layer's name, and the batch axis of every input is dynamic.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import onnx
import torch
from torch import fx

from ..version import __version__
from .domain import DOMAIN
from .freeze import FrozenLayer
from .onnx_schema import translation_table

MIN_OPSET = 17


def _batched(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Inputs with a batch of at least 2 (a batch of 1 would be specialised by torch.export)."""
    return tuple(
        torch.cat([x, x]) if torch.is_tensor(x) and x.dim() > 0 and x.shape[0] == 1 else x
        for x in inputs
    )


def _rename_custom_nodes(model: onnx.ModelProto, layers: list[FrozenLayer]) -> None:
    expected = {layer.name for layer in layers}
    seen: set[str] = set()
    for node in model.graph.node:
        if node.domain != DOMAIN:
            continue
        layer = next(a.s.decode() for a in node.attribute if a.name == "layer")
        if layer not in expected or layer in seen:
            raise RuntimeError(f"export produced an unexpected {DOMAIN} node for layer {layer!r}")
        node.name = layer
        seen.add(layer)
    if seen != expected:
        raise RuntimeError(f"export lost the approximate layers {sorted(expected - seen)}")


def to_onnx(
    gm: fx.GraphModule, layers: list[FrozenLayer], example_inputs: Any, opset: int = 18
) -> onnx.ModelProto:
    """Export frozen ``gm`` (see :func:`.freeze.freeze`) to an ONNX model with a dynamic batch."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    inputs = _batched(inputs)
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} if torch.is_tensor(x) and x.dim() > 0 else None for x in inputs)
    with torch.no_grad():
        outputs = torch.utils._pytree.tree_leaves(gm(*inputs))
    names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    log = io.StringIO()
    with contextlib.redirect_stdout(log), torch.no_grad():
        program = torch.onnx.export(
            gm,
            inputs,
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=dynamic,
            custom_translation_table=translation_table(),
            output_names=names,
            verbose=False,
            optimize=True,
        )
    model = program.model_proto
    _rename_custom_nodes(model, layers)
    model.producer_name = "appmult-fx"
    model.producer_version = __version__
    return model
