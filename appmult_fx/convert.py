"""The public verbs: ``convert``, ``calibrate`` and ``layers``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import fx, nn
from tqdm.auto import tqdm

from .ops.quantizers import ActivationQuantizer, WeightQuantizer
from .passes import leaf_layers
from .passes.assign import assign
from .passes.context import LutStore
from .passes.match import find_layers
from .passes.records import META_KEY, LayerRecord, require_records
from .passes.rewrite import rewrite
from .passes.spec import BACKWARD_MODES, GRADIENT_MODES, Spec
from .passes.trace import example_shapes, trace
from .passes.unlisted import report_unlisted


def convert(
    model: nn.Module,
    spec: Spec,
    *,
    gradient: str = "lut",
    backward: str = "approximate",
    example_inputs: Any = None,
    leaf_modules: Iterable[str | type] = (),
    concrete_args: dict[str, Any] | None = None,
) -> fx.GraphModule:
    """Trace ``model`` and rewrite every layer the spec assigns a multiplier to.

    ``gradient`` (``"lut"``: the multiplier's gradient LUTs; ``"ste"``: the exact product's
    gradient) and ``backward`` (FP multipliers: ``"approximate"`` or ``"exact"`` gradient
    GEMMs) are defaults for rules that do not set their own. ``example_inputs`` (a tensor or
    tuple) records shapes so ``layers()`` can report multiply counts. The original model is
    not modified; the result is a ``torch.fx.GraphModule`` that trains like the model did.
    """
    if not isinstance(spec, Spec):
        raise TypeError(f"spec must be an appmult_fx.Spec, got {type(spec).__name__}")
    if is_converted(model):
        raise ValueError(
            "convert: this model is already converted (it holds appmult-fx quantizers or LUT "
            "tables); converting it again would quantize twice. Convert the original float "
            "model instead: convert() never modifies its input, so amx.convert(float_model, "
            "new_spec) gives a model with the new multipliers; to carry retrained weights over, "
            "first float_model.load_state_dict(converted.state_dict(), strict=False) (the "
            "layers keep their names)"
        )
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {GRADIENT_MODES}, got {gradient!r}")
    if backward not in BACKWARD_MODES:
        raise ValueError(f"backward must be one of {BACKWARD_MODES}, got {backward!r}")
    spec = spec.with_default_gradient(gradient).with_default_backward(backward)
    gm = trace(model, leaf_modules, concrete_args)
    inside_leaves = leaf_layers.leaf_layers(gm)
    with leaf_layers.counting(gm, inside_leaves) as leaf_macs:
        if example_inputs is not None:
            inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
            example_shapes(gm, inputs)
    sites = find_layers(gm)
    gm = rewrite(gm, assign(gm, sites, spec))
    leaf_layers.attach(gm, inside_leaves, leaf_macs if example_inputs is not None else None)
    report_unlisted(gm)
    gm.train(model.training)
    return gm


def is_converted(model: nn.Module) -> bool:
    """Whether ``model`` (or a submodule) is the output of :func:`convert`."""
    if isinstance(model, fx.GraphModule) and any(META_KEY in n.meta for n in model.graph.nodes):
        return True
    kinds = (ActivationQuantizer, WeightQuantizer, LutStore)
    return any(isinstance(m, kinds) for m in model.modules())


def layers(gm: fx.GraphModule) -> list[LayerRecord]:
    """One record per multiply layer of a converted model (float layers included, and those
    inside leaf modules), in graph order. Refuses a graph whose layers lost their records
    (rebuilt after conversion, e.g. by ``torch.fx.Transformer``)."""
    require_records(gm)
    out: list[LayerRecord] = []
    for node in gm.graph.nodes:
        if META_KEY in node.meta:
            out.append(node.meta[META_KEY])
        out.extend(node.meta.get(leaf_layers.LEAF_KEY, ()))
    return out


def quantizers(gm: nn.Module) -> list[ActivationQuantizer]:
    """The activation quantizers (observers) of a converted model."""
    return [m for m in gm.modules() if isinstance(m, ActivationQuantizer)]


@torch.no_grad()
def calibrate(
    gm: nn.Module, batches: Iterable[Any], *, max_batches: int | None = None, progress: bool = True
) -> nn.Module:
    """Run ``batches`` through ``gm`` so the activation observers see real data.

    Only the observers update: BatchNorm statistics, dropout and weights are untouched and
    every module's train/eval mode is restored afterwards. A batch is a tensor or a tuple of
    model inputs; it is moved to the model's device.
    """
    observers = quantizers(gm)
    if not observers:
        raise ValueError("calibrate: the model has no activation quantizers (was it converted?)")
    modes = {m: m.training for m in gm.modules()}
    device = next((t.device for t in gm.buffers()), torch.device("cpu"))
    try:
        gm.eval()
        for q in observers:
            q.train()
        seen = 0
        for batch in tqdm(
            batches, desc="calibrate", disable=not progress, total=max_batches, leave=False
        ):
            args = batch if isinstance(batch, (tuple, list)) else (batch,)
            gm(*(a.to(device) if torch.is_tensor(a) else a for a in args))
            seen += 1
            if max_batches is not None and seen >= max_batches:
                break
        if seen == 0:
            raise ValueError("calibrate: no batches were given")
    finally:
        for m, mode in modes.items():
            m.training = mode
    return gm
