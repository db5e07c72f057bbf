"""Freeze a converted model for export: each approximate layer becomes one frozen op.

The converted graph computes a layer as ``[pad] -> input quantizer -> weight quantizer ->
lut_conv/lut_linear -> rescale``. In eval mode everything but the activation is constant:
the weight codes, scales and zero points (evaluated once here) and the activation's scale and
zero point (from the calibrated running range). :func:`freeze` replaces the whole chain by one
``appmult_export::lut_conv`` / ``lut_linear`` call on constant buffers, absorbing a preceding
zero padding into the op's ``pads``, and describes each layer with a :class:`FrozenLayer`.
A matmul of two activations (two activation quantizers -> ``lut_matmul`` -> rescale) becomes
one ``appmult_export::lut_matmul`` with both operands' constant quantization parameters.

Nothing untrustworthy is exported: the model's LUT buffers must still hash as recorded at
conversion (and equal their multiplier's table, which the frozen ops then use), and every
exported constant (activation ranges, scales, zero points, weights, biases) must be finite.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..luts.multiplier import Multiplier
from ..ops.quantizers import ActivationQuantizer, WeightQuantizer, qparams
from ..passes.context import LUT_MODULE, LutStore, safe_name
from ..passes.dead_code import erase_unused, may_write, unused_nodes
from ..passes.records import META_KEY, LayerRecord, require_records
from ..passes.relu_inputs import drop_relu_inputs
from . import torch_ops  # noqa: F401  (registers torch.ops.appmult_export)
from .domain import OP_CONV, OP_GEMM, OP_MATMUL

FROZEN_MODULE = "appmult_frozen"


@dataclass
class FrozenLayer:
    """One approximate layer as exported: its constants and where it came from.

    For a matmul (``OP_MATMUL``) ``x_*`` belong to the left operand, ``w_scale`` /
    ``w_zero_point`` to the right one and ``w_codes`` is ``None``.
    """

    record: LayerRecord
    op: str  # OP_CONV, OP_GEMM or OP_MATMUL
    multiplier: Multiplier
    x_scale: torch.Tensor
    x_zero_point: torch.Tensor
    w_codes: torch.Tensor | None
    w_scale: torch.Tensor
    w_zero_point: torch.Tensor
    geometry: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The PyTorch layer name (also the ONNX node name)."""
        return self.record.name


class _Constants(nn.Module):
    """Holds the frozen constants as buffers so the exporter turns them into initializers."""


def _tensor_of(gm: fx.GraphModule, node: Any, layer: str, what: str) -> torch.Tensor:
    if isinstance(node, fx.Node) and node.op == "get_attr":
        return (
            gm.get_parameter(node.target)
            if _is_param(gm, node.target)
            else gm.get_buffer(node.target)
        )
    raise ValueError(
        f"layer {layer!r}: the {what} is computed in the graph ({node}); export needs it to be "
        "a parameter or buffer of the model"
    )


def _is_param(gm: fx.GraphModule, target: str) -> bool:
    try:
        gm.get_parameter(target)
    except AttributeError:
        return False
    return True


def _absorbable_pad(x: Any, spatial: int) -> list[int] | None:
    """ONNX-order pads of a zero ``F.pad`` over the last ``spatial`` axes feeding only the conv."""
    if not (isinstance(x, fx.Node) and x.op == "call_function" and x.target is F.pad):
        return None
    amounts = list(x.args[1]) if len(x.args) > 1 else list(x.kwargs.get("pad", ()))
    mode = x.kwargs.get("mode", x.args[2] if len(x.args) > 2 else "constant")
    value = x.kwargs.get("value", x.args[3] if len(x.args) > 3 else None)
    if mode != "constant" or value not in (None, 0, 0.0) or len(amounts) != 2 * spatial:
        return None
    if len(x.users) != 1 or any(a < 0 for a in amounts):
        return None
    begins = [amounts[2 * (spatial - 1 - i)] for i in range(spatial)]
    ends = [amounts[2 * (spatial - 1 - i) + 1] for i in range(spatial)]
    return begins + ends


def _finite(layer: str, what: str, t: torch.Tensor) -> None:
    """Refuse to export a non-finite constant (it would write NaN into the model/manifest)."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(
            f"layer {layer!r}: its {what} is not finite (NaN or inf), so the exported model "
            "would compute garbage; refusing to export. Re-calibrate (amx.calibrate) or retrain "
            "from a finite checkpoint"
        )


def _activation_qparams(
    iq: nn.Module, layer: str, bits: int, signed: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of a calibrated activation quantizer of ``bits`` (its side's
    width: ``bits_a`` for a layer's input or a matmul's left operand, ``bits_b`` for the
    right one)."""
    if not isinstance(iq, ActivationQuantizer):
        raise ValueError(
            f"layer {layer!r}: expected an ActivationQuantizer, got {type(iq).__name__}"
        )
    if not bool(iq.initialized):
        raise ValueError(
            f"layer {layer!r}: its activation quantizer was never calibrated, so the exported "
            "activation scale would be undefined; run amx.calibrate(gm, batches) (or train) first"
        )
    _finite(layer, "activation range", torch.stack([iq.min_val, iq.max_val]))
    if (iq.bits, iq.signed) != (bits, signed):
        raise ValueError(
            f"layer {layer!r}: its activation quantizer is {iq.bits}-bit signed={iq.signed}, "
            f"but the multiplier's operand is {bits}-bit signed={signed}"
        )
    scale, zp = qparams(iq.min_val, iq.max_val, bits, signed)
    _finite(layer, "activation scale", scale)
    return scale.float(), zp.to(torch.int32)


class _Layer:
    """The nodes and submodules of one rewritten layer, found through its record's parts."""

    def __init__(self, gm: fx.GraphModule, record: LayerRecord, nodes: dict[str, fx.Node]) -> None:
        parts = record.parts
        if parts is None or len(parts.quantizers) != 2 or "table" not in parts.tables:
            raise ValueError(
                f"layer {record.name!r}: its record does not describe a quantized LUT-GEMM "
                "(was the model converted by this version of appmult-fx?)"
            )
        self.gm, self.record, self.parts, self.nodes = gm, record, parts, nodes
        self.gemm, self.product = nodes[parts.gemm], nodes[parts.product]
        self.inputs = [nodes[n] for n in parts.inputs]

    def quantizer(self, i: int) -> nn.Module:
        """Quantizer submodule ``i`` (operand order)."""
        return self.gm.get_submodule(self.parts.quantizers[i])

    def table(self, store: _Constants) -> fx.Node:
        """A ``get_attr`` node for the multiplier's table, kept once per multiplier in ``store``.

        The table is the LUT buffer the layer computes with, which must equal its multiplier's
        table (else the exported model would not compute what the PyTorch model computes).
        """
        mult, path = self.record.multiplier, self.parts.tables["table"]
        table = self.gm.get_buffer(path)
        expected = mult.table.long()
        if table.shape != expected.shape or not torch.equal(table.cpu().long(), expected):
            raise ValueError(
                f"layer {self.record.name!r}: its LUT buffer {path} differs from the table of "
                f"multiplier {mult.name!r} (sha256 {mult.sha256[:16]}...); the exported model "
                "would not compute what the PyTorch model computes; refusing to export"
            )
        attr = f"table_{mult.sha256[:16]}"
        if not hasattr(store, attr):
            store.register_buffer(attr, table.detach().to(torch.int32).contiguous().clone())
        return self.gm.graph.get_attr(f"{FROZEN_MODULE}.{attr}")

    def replace(self, new: fx.Node) -> None:
        """Let ``new`` stand for the layer's product; drop the product and GEMM nodes.

        ``nodes`` (shared by all layers) then maps the product's name to ``new``, so a later
        layer reading this one's output finds the node that is now in the graph.
        """
        self.nodes[self.product.name] = new
        self.product.replace_all_uses_with(new)
        self.gm.graph.erase_node(self.product)
        self.gm.graph.erase_node(self.gemm)


def _constants(
    gm: fx.GraphModule, store: _Constants, prefix: str, consts: dict[str, torch.Tensor]
) -> list[fx.Node]:
    """Register ``consts`` as buffers of ``store``; ``get_attr`` nodes for them, in order."""
    for key, value in consts.items():
        store.register_buffer(f"{prefix}_{key}", value.clone())
    return [gm.graph.get_attr(f"{FROZEN_MODULE}.{prefix}_{key}") for key in consts]


@torch.no_grad()
def _freeze_layer(layer: _Layer, op: str, store: _Constants) -> FrozenLayer:
    gm, record, parts = layer.gm, layer.record, layer.parts
    mult = record.multiplier
    bits_a, bits_b = record.bits_a, record.bits_b
    x_scale, x_zp = _activation_qparams(layer.quantizer(0), record.name, bits_a, mult.signed)
    wq = layer.quantizer(1)
    if not isinstance(wq, WeightQuantizer):
        raise ValueError(
            f"layer {record.name!r}: expected a WeightQuantizer, got {type(wq).__name__}"
        )
    if (wq.bits, wq.signed) != (bits_b, mult.signed):
        raise ValueError(
            f"layer {record.name!r}: its weight quantizer is {wq.bits}-bit signed={wq.signed}, "
            f"but the multiplier's weight operand is {bits_b}-bit signed={mult.signed}"
        )
    weight = _tensor_of(gm, layer.nodes[parts.weight], record.name, "weight")
    _finite(record.name, "weight", weight.detach())
    codes, w_scale, w_zp = wq(weight.detach().float())
    _finite(record.name, "weight scale", w_scale)
    codes = codes.round().to(torch.int8 if mult.signed else torch.uint8)
    w_scale, w_zp = w_scale.float(), w_zp.to(torch.int32)

    prefix = safe_name(record.name)
    consts = {
        "w": codes,
        "x_scale": x_scale,
        "x_zero_point": x_zp,
        "w_scale": w_scale,
        "w_zero_point": w_zp,
    }
    if parts.bias is not None:
        bias = _tensor_of(gm, layer.nodes[parts.bias], record.name, "bias")
        consts["bias"] = bias.detach().float()
        _finite(record.name, "bias", consts["bias"])
    x = layer.inputs[0]
    frozen = FrozenLayer(record, op, mult, x_scale, x_zp, codes, w_scale, w_zp)
    common = (bits_a, bits_b, record.signed, mult.name, mult.sha256, record.name)
    with gm.graph.inserting_before(layer.product):
        attrs = _constants(gm, store, prefix, consts)
        operands = [*attrs[:5], attrs[5] if len(attrs) > 5 else None, layer.table(store)]
        if op == OP_CONV:
            spatial = codes.dim() - 2
            pads = _absorbable_pad(x, spatial)
            if pads is not None:
                x = x.args[0]
            else:
                pads = [0] * (2 * spatial)
            geo = parts.geometry
            frozen.geometry = {
                "strides": list(geo["stride"]),
                "pads": pads,
                "dilations": list(geo["dilation"]),
                "group": int(geo["groups"]),
            }
            geo = frozen.geometry
            new = gm.graph.call_function(
                torch.ops.appmult_export.lut_conv.default,
                (x, *operands, geo["strides"], pads, geo["dilations"], geo["group"], *common),
            )
        else:
            new = gm.graph.call_function(
                torch.ops.appmult_export.lut_linear.default, (x, *operands, *common)
            )
    layer.replace(new)
    return frozen


def _freeze_matmul(layer: _Layer, store: _Constants) -> FrozenLayer:
    gm, record = layer.gm, layer.record
    mult = record.multiplier
    bits_a, bits_b = record.bits_a, record.bits_b
    sa, za = _activation_qparams(layer.quantizer(0), record.name, bits_a, mult.signed)
    sb, zb = _activation_qparams(layer.quantizer(1), record.name, bits_b, mult.signed)
    prefix = safe_name(record.name)
    consts = {"a_scale": sa, "a_zero_point": za, "b_scale": sb, "b_zero_point": zb}
    with gm.graph.inserting_before(layer.product):
        attrs = _constants(gm, store, prefix, consts)
        new = gm.graph.call_function(
            torch.ops.appmult_export.lut_matmul.default,
            (
                *layer.inputs,
                *attrs,
                layer.table(store),
                bits_a,
                bits_b,
                record.signed,
                mult.name,
                mult.sha256,
                record.name,
            ),
        )
    layer.replace(new)
    return FrozenLayer(record, OP_MATMUL, mult, sa, za, None, sb, zb)


# The op kinds export freezes (integer multipliers): layer op -> frozen op.
_EXPORTED_OPS = {
    "conv1d": OP_CONV,
    "conv2d": OP_CONV,
    "linear": OP_GEMM,
    "matmul": OP_MATMUL,
    "bmm": OP_MATMUL,
    "baddbmm": OP_MATMUL,
    "addmm": OP_MATMUL,
}


def _written_state(node: fx.Node) -> bool:
    """Whether a call writes to a parameter or buffer directly: its first argument is a
    ``get_attr`` or that attribute's ``.data``."""
    target = node.args[0] if node.args else None
    if (
        isinstance(target, fx.Node)
        and target.op == "call_function"
        and target.target is getattr
        and target.args[1:] == ("data",)
    ):
        target = target.args[0]
    return isinstance(target, fx.Node) and target.op == "get_attr"


def _drop_state_writes(gm: fx.GraphModule, keep: set[fx.Node]) -> None:
    """Erase, with a warning, the in-place writes to parameters and buffers whose results
    nothing uses (weight clipping in the forward, a step counter): an exported graph holds no
    state, and computes with their current values."""
    writes = [
        n
        for n in gm.graph.nodes
        if not n.users
        and n.op in ("call_function", "call_method")
        and may_write(gm, n)
        and _written_state(n)
    ]
    if not writes:
        return
    warnings.warn(
        f"export leaves out {len(writes)} in-place write(s) to parameters or buffers in the "
        f"forward ({', '.join(n.name for n in writes)}): an exported graph holds no "
        "state; it computes with their current values",
        stacklevel=3,
    )
    for node in writes:
        keep.discard(node)
        gm.graph.erase_node(node)


def freeze(gm: fx.GraphModule) -> tuple[fx.GraphModule, list[FrozenLayer]]:
    """An eval-mode copy of converted ``gm`` with frozen approximate layers, and their details."""
    if not isinstance(gm, fx.GraphModule):
        raise TypeError(f"expected a converted fx.GraphModule, got {type(gm).__name__}")
    require_records(gm)
    gm = copy.deepcopy(gm).eval()
    luts = getattr(gm, LUT_MODULE, None)
    if isinstance(luts, LutStore):
        luts.verify("export")
    if hasattr(gm, FROZEN_MODULE):
        raise ValueError(f"the model already has an attribute {FROZEN_MODULE!r}")
    keep = unused_nodes(gm)  # what the model computes for its own sake stays
    drop_relu_inputs(gm)
    store = _Constants()
    gm.add_submodule(FROZEN_MODULE, store)
    frozen: list[FrozenLayer] = []
    nodes = {n.name: n for n in gm.graph.nodes}
    for node in list(gm.graph.nodes):
        record = node.meta.get(META_KEY)
        if record is None or not record.approximate:
            continue
        op = _EXPORTED_OPS.get(record.op) if record.multiplier.kind == "int" else None
        if op is None:
            raise ValueError(
                f"layer {record.name!r}: export supports integer multipliers on conv, linear "
                f"and matmul layers; this {record.op} layer uses a {record.multiplier.kind} "
                f"multiplier ({getattr(node.target, '__name__', node.target)}); keep it float "
                f"with spec.set_module_name({record.name!r}, None) to export the model"
            )
        layer = _Layer(gm, record, nodes)
        if op == OP_MATMUL:
            frozen.append(_freeze_matmul(layer, store))
        else:
            frozen.append(_freeze_layer(layer, op, store))
    if not frozen:
        raise ValueError("the model has no approximate layers to export (was it converted?)")
    _drop_state_writes(gm, keep)
    erase_unused(gm, keep)
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm, frozen
