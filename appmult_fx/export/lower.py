"""Lower ``appmult.LutConv`` / ``LutGemm`` / ``LutMatMul`` nodes to standard ONNX ops, exactly.

Each node becomes (``na = 2**bits_a`` table rows, ``nb = 2**bits_b`` columns, ``K`` the
reduction length)::

    q    = Round(Clip(X / x_scale - x_zero_point, qmin, qmax))        float codes (bits_a)
    [conv: q = Pad(X) first; im2col by a Conv with one-hot kernels, group = C]
    a    = Cast<int64>(q) (mod na when signed)                         table rows
    acc  = ReduceSum_K(Gather(lut_flat, a * nb + w_index))             int64, exact
    y    = Cast<float>((Cast<double>(Cast<float>(acc)) + zw*SUM_K q + zx*SUM_K w + K*zx*zw)
                       * (x_scale * w_scale)) + B

which is the converted model's arithmetic step for step (the same float32 / float64 casts),
so the result matches PyTorch to the last bit up to float rounding in the other layers.
``LutMatMul`` quantizes each operand at its side's width and gathers with ``a * nb + b``.
``w_index`` (weight-side table columns) and the constant cross terms are precomputed from the
node's initializers. Memory: ``Gather`` materialises ``M x K x O`` int64 indices per layer
(``M`` = batch x output positions), fine for small models at small batch. The table is an
int64 initializer so the sum is exact for any ``K`` (an int32 sum would wrap past the bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .domain import CUSTOM_OPS, DOMAIN, OP_CONV, OP_MATMUL


class UnknownMultiplierError(ValueError):
    """An ``appmult`` node names a multiplier whose table was not supplied."""


class _Builder:
    """Collects the nodes and initializers of one lowered node under a name prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        full = f"{self.prefix}/{name}"
        if any(t.name == full for t in self.initializers):
            full = f"{full}_{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value), full))
        return full

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        self._count += 1
        name = f"{self.prefix}/{op_type}_{self._count}"
        out = output or f"{name}:0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out


def _widths(at: dict[str, Any]) -> tuple[int, int]:
    """A node's operand widths ``(bits_a, bits_b)``: activation/left, weight/right."""
    return int(at["bits_a"]), int(at["bits_b"])


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _const_inputs(
    node: onnx.NodeProto, values: Mapping[str, np.ndarray], first: int
) -> list[np.ndarray]:
    """Inputs ``first .. 5`` of ``node``, which must be initializers."""
    names = list(node.input[first:6])
    missing = [n for n in names if n not in values]
    if len(names) != 6 - first or missing:
        raise ValueError(
            f"node {node.name!r}: inputs {first}..5 (weight codes and quantization parameters) "
            f"must be initializers; missing {missing or names}"
        )
    return [values[n] for n in names]


def _quantize(b: _Builder, x: str, scale: str, zero_point: str, bits: int, signed: bool) -> str:
    qmin, qmax = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    zp = b.op("Cast", [zero_point], to=TensorProto.FLOAT)
    t = b.op("Sub", [b.op("Div", [x, scale]), zp])
    t = b.op("Clip", [t, b.const("qmin", np.float32(qmin)), b.const("qmax", np.float32(qmax))])
    return b.op("Round", [t])


def _table_index(b: _Builder, codes: str, size: int, signed: bool, tag: str) -> str:
    """Table row/column indices (int64) of int64 ``codes``: two's-complement mod ``size``."""
    if not signed:
        return codes
    n_c = b.const(f"n_{tag}", np.int64(size))
    return b.op("Mod", [b.op("Add", [codes, n_c]), n_c])


def _lut_reduce(
    b: _Builder,
    q: str,
    w_index: np.ndarray,
    lut: str,
    widths: tuple[int, int],
    signed: bool,
    zw: np.ndarray,
    cross: np.ndarray,
    scale: np.ndarray,
) -> str:
    """Float ``[..., O]`` output from codes ``q [..., K]`` and weight columns ``[..., K, O]``."""
    qi = b.op("Cast", [q], to=TensorProto.INT64)
    a = _table_index(b, qi, 1 << widths[0], signed, "a")
    nb = b.const("nb", np.int64(1 << widths[1]))
    rows = b.op("Mul", [b.op("Unsqueeze", [a, b.const("last", np.array([-1], np.int64))]), nb])
    idx = b.op("Add", [rows, b.const("w_index", w_index.astype(np.int64))])
    acc = b.op(
        "ReduceSum",
        [b.op("Gather", [lut, idx], axis=0), b.const("k_axis", np.array([-2], np.int64))],
        keepdims=0,
    )
    acc = b.op("Cast", [b.op("Cast", [acc], to=TensorProto.FLOAT)], to=TensorProto.DOUBLE)
    row = b.op("ReduceSum", [qi, b.const("row_axis", np.array([-1], np.int64))], keepdims=1)
    row = b.op("Cast", [row], to=TensorProto.DOUBLE)
    total = b.op(
        "Add", [b.op("Add", [acc, b.op("Mul", [row, b.const("zw", zw)])]), b.const("cross", cross)]
    )
    return b.op("Cast", [b.op("Mul", [total, b.const("scale", scale)])], to=TensorProto.FLOAT)


def _weight_terms(
    codes: np.ndarray, zx: float, zw: np.ndarray, xs: np.ndarray, ws: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For weight codes ``[..., K, O]``: ``zw``, ``zx * SUM_K w + K * zx * zw`` and
    ``x_scale * w_scale`` as float64 ``[..., O]`` (per-tensor parameters broadcast)."""
    col = codes.astype(np.float64).sum(axis=-2)
    size = col.size

    def per_channel(v: np.ndarray) -> np.ndarray:
        return np.broadcast_to(v.astype(np.float64).reshape(-1), (size,)).reshape(col.shape)

    zw_d = per_channel(zw)
    cross = zx * col + codes.shape[-2] * zx * zw_d
    return np.ascontiguousarray(zw_d), cross, np.float64(xs) * per_channel(ws)


def _add_bias(b: _Builder, y: str, node: onnx.NodeProto, shape: list[int], output: str) -> str:
    if len(node.input) > 6 and node.input[6]:
        bias = b.op("Reshape", [node.input[6], b.const("bias_shape", np.array(shape, np.int64))])
        return b.op("Add", [y, bias], output)
    return b.op("Identity", [y], output)


def _lower_gemm(
    b: _Builder, node: onnx.NodeProto, consts: list[np.ndarray], lut: str, at: dict
) -> None:
    w, xs, zx, ws, zw = consts
    widths, signed = _widths(at), bool(at["signed"])
    codes = w.astype(np.int64).T  # [K, O]
    zw_d, cross, scale = _weight_terms(codes, float(zx), zw, xs, ws)
    q = _quantize(b, node.input[0], node.input[2], node.input[3], widths[0], signed)
    y = _lut_reduce(b, q, codes % (1 << widths[1]), lut, widths, signed, zw_d, cross, scale)
    _add_bias(b, y, node, [-1], node.output[0])


def _lower_conv(
    b: _Builder, node: onnx.NodeProto, consts: list[np.ndarray], lut: str, at: dict
) -> None:
    w, xs, zx, ws, zw = consts
    widths, signed = _widths(at), bool(at["signed"])
    o, cg, kernel, g = w.shape[0], w.shape[1], tuple(w.shape[2:]), at["group"]
    kk, og = int(np.prod(kernel)), o // g
    kg, c = cg * kk, cg * g
    x = node.input[0]
    if any(at["pads"]):
        d = len(kernel)
        pads = [0, 0, *at["pads"][:d], 0, 0, *at["pads"][d:]]
        x = b.op("Pad", [x, b.const("pads", np.array(pads, np.int64))], mode="constant")
    q = _quantize(b, x, node.input[2], node.input[3], widths[0], signed)
    one_hot = np.zeros((c * kk, 1, *kernel), np.float32)
    for j, pos in enumerate(np.ndindex(*kernel)):
        one_hot[(np.arange(c) * kk + j, 0, *pos)] = 1.0
    cols = b.op(
        "Conv",
        [q, b.const("im2col", one_hot)],
        group=c,
        strides=at["strides"],
        dilations=at["dilations"],
        kernel_shape=list(kernel),
    )
    t = b.op("Reshape", [cols, b.const("groups_shape", np.array([0, g, kg, -1], np.int64))])
    t = b.op("Transpose", [t], perm=[0, 1, 3, 2])  # [N, G, L, Kg]
    codes = w.astype(np.int64).reshape(g, og, kg).transpose(0, 2, 1)[:, None]  # [G, 1, Kg, Og]
    zw_d, cross, scale = _weight_terms(codes, float(zx), zw, xs, ws)  # [G, 1, Og]
    w_index = codes % (1 << widths[1])
    y = _lut_reduce(b, t, w_index, lut, widths, signed, zw_d, cross, scale)  # [N, G, L, Og]
    y = b.op("Transpose", [y], perm=[0, 1, 3, 2])
    head = b.op("Shape", [cols], start=0, end=1)
    tail = b.op("Shape", [cols], start=2)
    shape = b.op("Concat", [head, b.const("out_channels", np.array([o], np.int64)), tail], axis=0)
    y = b.op("Reshape", [y, shape])
    _add_bias(b, y, node, [-1] + [1] * len(kernel), node.output[0])


def _lower_matmul(
    b: _Builder, node: onnx.NodeProto, consts: list[np.ndarray], lut: str, at: dict
) -> None:
    sa, za, sb, zb = (np.asarray(c) for c in consts)
    (bits_a, bits_b), signed = _widths(at), bool(at["signed"])
    qa = _quantize(b, node.input[0], *node.input[2:4], bits_a, signed)
    qb = _quantize(b, node.input[1], *node.input[4:6], bits_b, signed)
    qa = b.op("Cast", [qa], to=TensorProto.INT64)
    qb = b.op("Cast", [qb], to=TensorProto.INT64)
    ia = _table_index(b, qa, 1 << bits_a, signed, "a")
    ib = _table_index(b, qb, 1 << bits_b, signed, "b")
    nb = b.const("nb", np.int64(1 << bits_b))
    rows = b.op("Mul", [b.op("Unsqueeze", [ia, b.const("a_axis", np.array([-1], np.int64))]), nb])
    idx = b.op("Add", [rows, b.op("Unsqueeze", [ib, b.const("b_axis", np.array([-3], np.int64))])])
    k_axis = b.const("k_axis", np.array([-2], np.int64))
    acc = b.op("ReduceSum", [b.op("Gather", [lut, idx], axis=0), k_axis], keepdims=0)
    acc = b.op("Cast", [b.op("Cast", [acc], to=TensorProto.FLOAT)], to=TensorProto.DOUBLE)
    row = b.op("ReduceSum", [qa, b.const("row_axis", np.array([-1], np.int64))], keepdims=1)
    col = b.op("ReduceSum", [qb, k_axis], keepdims=1)
    za_d, zb_d = np.float64(za), np.float64(zb)
    k = b.op("Cast", [b.op("Shape", [node.input[0]], start=-1)], to=TensorProto.DOUBLE)
    total = b.op(
        "Add", [acc, b.op("Mul", [b.op("Cast", [row], to=TensorProto.DOUBLE), b.const("zb", zb_d)])]
    )
    total = b.op(
        "Add",
        [total, b.op("Mul", [b.op("Cast", [col], to=TensorProto.DOUBLE), b.const("za", za_d)])],
    )
    total = b.op("Add", [total, b.op("Mul", [k, b.const("zazb", za_d * zb_d)])])
    scale = b.const("scale", np.float64(sa) * np.float64(sb))
    b.op("Cast", [b.op("Mul", [total, scale])], node.output[0], to=TensorProto.FLOAT)


def lower(model: onnx.ModelProto, tables: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` with every ``appmult`` node replaced by standard ONNX ops.

    ``tables`` maps a multiplier's content hash (the nodes' ``multiplier_sha256``) to its
    ``int32 [2**bits_a, 2**bits_b]`` table.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    luts: dict[str, str] = {}
    nodes: list[onnx.NodeProto] = []
    extra: list[onnx.TensorProto] = []
    for node in graph.node:
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        if node.op_type not in CUSTOM_OPS:
            raise ValueError(
                f"node {node.name!r}: unknown op {DOMAIN}.{node.op_type}; "
                f"expected one of {CUSTOM_OPS}"
            )
        at = _attrs(node)
        sha = at.get("multiplier_sha256", "")
        if sha not in tables:
            raise UnknownMultiplierError(
                f"node {node.name!r} uses multiplier {at.get('multiplier')!r} (sha256 {sha}), "
                "which the manifest does not list; the model and manifest do not belong together"
            )
        bits_a, bits_b = _widths(at)
        if np.shape(tables[sha]) != (1 << bits_a, 1 << bits_b):
            raise ValueError(
                f"node {node.name!r}: its multiplier's table has shape {np.shape(tables[sha])}, "
                f"but the node's widths bits_a={bits_a}, bits_b={bits_b} need "
                f"{(1 << bits_a, 1 << bits_b)}; the model and manifest do not belong together"
            )
        if sha not in luts:
            luts[sha] = f"appmult_lut_{sha[:16]}"
            extra.append(
                numpy_helper.from_array(
                    np.ascontiguousarray(tables[sha], np.int64).reshape(-1), luts[sha]
                )
            )
        b = _Builder(node.name or node.output[0])
        if node.op_type == OP_MATMUL:
            _lower_matmul(b, node, _const_inputs(node, values, 2), luts[sha], at)
        else:
            lower_layer = _lower_conv if node.op_type == OP_CONV else _lower_gemm
            lower_layer(b, node, _const_inputs(node, values, 1), luts[sha], at)
        nodes.extend(b.nodes)
        extra.extend(b.initializers)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(extra)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    imports = [o for o in out.opset_import if o.domain != DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(imports)
    return out
