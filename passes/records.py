"""Per-layer records kept in the converted graph (``node.meta["appmult"]``).

A :class:`LayerRecord` says what one multiply layer does; for a rewritten layer its
:class:`LayerParts` says where the pieces live in the converted GraphModule (node and
submodule names, the geometry, the table buffers). Export and other consumers read these
named fields, never node argument positions.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from torch import fx

from appmult_fx.ops import fp_layers, int_layers

META_KEY = "appmult"

# The functions that compute an approximate layer; their node carries the layer's record.
LAYER_FUNCTIONS = frozenset(
    {
        int_layers.lut_linear,
        int_layers.lut_conv,
        int_layers.lut_matmul,
        int_layers.lut_einsum,
        int_layers.lut_conv_transpose,
        fp_layers.fp_matmul,
        fp_layers.fp_linear,
        fp_layers.fp_conv1d,
        fp_layers.fp_conv2d,
    }
)


def require_records(gm: fx.GraphModule) -> None:
    """Refuse a graph whose approximate layers lost their records: one rebuilt after
    conversion by a tool that copies no ``node.meta`` (``torch.fx.Transformer``, a pickled copy
    of such a graph), where a layer list or an export would silently miss layers."""
    lost = [
        n.name
        for n in gm.graph.nodes
        if n.op == "call_function" and n.target in LAYER_FUNCTIONS and META_KEY not in n.meta
    ]
    if lost:
        raise ValueError(
            f"{len(lost)} approximate layer(s) of this model have lost their records "
            f"({', '.join(lost[:3])}{', ...' if len(lost) > 3 else ''}): its graph was rebuilt "
            "after conversion by a tool that keeps no node.meta (torch.fx.Transformer, "
            "Interpreter-based passes), so amx.layers and export cannot say which multiplier "
            "each layer uses. Transform the float model before amx.convert, or convert again."
        )


@dataclass(frozen=True)
class LayerParts:
    """Where a rewritten layer lives in the converted GraphModule (the contract with export).

    ``gemm`` is the LUT-GEMM node (its ``meta`` holds the record); ``product`` the node giving
    the layer's float product (``rescale`` for integer multipliers, the GEMM itself for FP);
    ``output`` the node that replaced the original layer (the product, or a ``baddbmm``'s
    ``beta * input + alpha * product``). ``quantizers`` are the quantizer submodules in operand
    order: ``(input, weight)`` for a layer with a weight, ``(a, b)`` for a product of two
    activations, ``()`` for FP multipliers. ``inputs`` are the float operand nodes those
    quantizers read (a conv's input after its explicit padding), in the same order.
    ``weight`` / ``bias`` name the nodes of the float weight and bias (``None``: none).
    ``geometry`` holds the keyword arguments given to the GEMM op (stride, dilation, ...);
    ``tables`` maps a table's role (``table``, ``grad_a``, ``grad_b``, ``mantissa_table``) to
    its buffer path.
    """

    gemm: str
    product: str
    output: str
    quantizers: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    weight: str | None = None
    bias: str | None = None
    geometry: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)


@dataclass
class LayerRecord:
    """What one multiply layer of a converted model does.

    ``multiplier`` is the multiplier object (``None`` = float layer); ``macs`` the number of
    multiplies for the example inputs given to ``convert`` (``None`` if none were given).
    ``bits`` is the multiplier's width: an int (square, or an FP multiplier's total width) or
    ``(bits_a, bits_b)`` (rectangular; :attr:`bits_a` / :attr:`bits_b` give both for any
    integer layer, :attr:`widths` the text ``"8x4"``).
    ``gradient`` is the integer multipliers' gradient mode (``"lut"``/``"ste"``), ``backward``
    the FP multipliers' backward mode (``"approximate"``/``"exact"``). ``nodes`` lists the
    graph nodes the layer became; ``parts`` (rewritten layers only) where they are.
    """

    name: str
    op: str
    _: KW_ONLY
    multiplier: Any = None
    bits: int | tuple[int, int] | None = None
    signed: bool | None = None
    gradient: str | None = None
    backward: str | None = None
    per_channel: bool = False
    macs: int | None = None
    nodes: list[str] = field(default_factory=list)
    parts: LayerParts | None = None

    @property
    def multiplier_name(self) -> str | None:
        """The multiplier's name, or ``None`` for a float layer."""
        return None if self.multiplier is None else self.multiplier.name

    def _int_multiplier(self) -> Any:
        m = self.multiplier
        return m if m is not None and m.kind == "int" else None

    @property
    def bits_a(self) -> int | None:
        """Activation (row operand) width of an integer layer, else ``None``."""
        m = self._int_multiplier()
        return None if m is None else m.bits_a

    @property
    def bits_b(self) -> int | None:
        """Weight (column operand: a matmul's right operand) width of an integer layer, else
        ``None``."""
        m = self._int_multiplier()
        return None if m is None else m.bits_b

    @property
    def widths(self) -> str:
        """As :attr:`Multiplier.widths`: ``"8"`` (square, or an FP multiplier's width),
        ``"8x4"`` (rectangular: activation x weight bits); ``"-"`` for a float layer."""
        m = self._int_multiplier()
        if m is None:
            return "-" if self.bits is None else str(self.bits)
        return m.widths

    @property
    def approximate(self) -> bool:
        """Whether the layer's multiplies go through an approximate multiplier table."""
        return self.multiplier is not None

    def __str__(self) -> str:
        mult = self.multiplier_name or "float"
        bits = "-" if self.bits is None else f"{self.widths}{'s' if self.signed else 'u'}"
        macs = "?" if self.macs is None else f"{self.macs:,}"
        grad = self.gradient or self.backward or "-"
        return f"{self.name:<32} {self.op:<10} {mult:<40} {bits:>4} {grad:<5} {macs:>14}"
