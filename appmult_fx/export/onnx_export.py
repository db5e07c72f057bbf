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


def opset_of(model: onnx.ModelProto) -> int:
    """The standard ONNX opset ``model`` imports."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _batch_size(inputs: tuple[Any, ...]) -> int | None:
    """The batch: dim 0 of the first tensor input with dimensions (``None``: no such input)."""
    return next((int(x.shape[0]) for x in inputs if torch.is_tensor(x) and x.dim() > 0), None)


def _in_batch(x: Any, batch: int | None) -> bool:
    """Whether input ``x`` is batched like the first input (dim 0 of the same size); other
    inputs (a ``[T, T]`` mask, a table) keep their shapes in the exported graph."""
    return torch.is_tensor(x) and x.dim() > 0 and int(x.shape[0]) == batch


def _batched(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Inputs with a batch of at least 2 (a batch of 1 would be specialised by torch.export);
    only the batched inputs grow."""
    batch = _batch_size(inputs)
    if batch != 1:
        return inputs
    return tuple(torch.cat([x, x]) if _in_batch(x, 1) else x for x in inputs)


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
    """Export frozen ``gm`` (see :func:`.freeze.freeze`) to an ONNX model at ``opset`` (refused
    where torch.onnx cannot write that opset) with a dynamic batch: dim 0 of the inputs whose
    dim 0 equals the first input's."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    inputs = _batched(inputs)
    size, batch = _batch_size(inputs), torch.export.Dim("batch")
    dynamic = tuple({0: batch} if _in_batch(x, size) else None for x in inputs)
    with torch.no_grad():
        outputs = torch.utils._pytree.tree_leaves(gm(*inputs))
    names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    log = io.StringIO()
    try:
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
    except ValueError as exc:  # onnxscript refuses some target opsets outright
        if opset == 18 or "opset" not in str(exc).lower():
            raise
        raise ValueError(
            f"torch.onnx could not write this model at opset {opset} ({exc}); export at the "
            "default opset 18"
        ) from exc
    model = program.model_proto
    made = opset_of(model)
    if made != opset:
        raise ValueError(
            f"torch.onnx could not write this model at opset {opset} (it wrote opset {made}; "
            "its log says why); export at the default opset 18"
        )
    _rename_custom_nodes(model, layers)
    model.producer_name = "appmult-fx"
    model.producer_version = __version__
    return model
