"""Find the multiply layers of a traced graph and name them."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from appmult_fx.ops.int_layers import einsum_as_bmm

from .matmul_module import Matmul
from .ops_table import (
    FUNCTION_OPS,
    FUNCTION_SPELLINGS,
    MODULE_OPS,
    UNCONVERTED_FUNCTIONS,
    UNCONVERTED_SPELLINGS,
    module_op,
    overrides_computation,
    unconverted_module_op,
)
from .records import META_KEY, LayerRecord


@dataclass
class LayerSite:
    """One multiply layer found in the graph.

    ``name`` is the module's qualified name for module calls; for function calls it is
    ``<enclosing module path>.<node name>`` (just the node name at top level).
    ``object_types``: the registered module class or function; a ``Matmul`` module also
    matches ``torch.matmul``, and a function called by the forward of a subclass of a registered
    module class with the same op (a weight-standardised ``Conv2d``) also matches that class.
    """

    node: fx.Node
    name: str
    op: str
    object_types: tuple[Any, ...]  # the spec object types it matches, most specific first
    module: nn.Module | None = None
    macs: int | None = None  # filled by find_layers (before any rewrite changes the operands)


def _enclosing_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1]
    return path[0] if isinstance(path, tuple) else str(path)


def find_layers(gm: fx.GraphModule) -> list[LayerSite]:
    """Every conv/linear (and other registered) multiply node, in graph order.

    Multiplies the rewrite cannot build (``nn.Bilinear``, an einsum that is no batched matmul,
    ...) stay float: each gets a float record (``node.meta["appmult"]``, listed by
    ``amx.layers``) and one warning names them all.
    """
    modules = dict(gm.named_modules())
    sites: list[LayerSite] = []
    unconverted: list[LayerRecord] = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = modules[node.target]
            found = module_op(module)
            if found and overrides_computation(module):  # a leaf with its own forward
                unconverted.append(_own_forward_record(node, found[1]))
            elif found:
                types = (found[0], torch.matmul) if found[0] is Matmul else (found[0],)
                sites.append(LayerSite(node, layer_name(node), found[1], types, module))
            elif unconverted_module_op(module) is not None:
                unconverted.append(_float_record(node, layer_name(node), module))
            continue
        fn = _function(node)
        if fn in FUNCTION_OPS and (fn is not torch.einsum or einsum_equation(node) is not None):
            types = (fn, *_owner_type(node, FUNCTION_OPS[fn]))
            sites.append(LayerSite(node, _function_name(node), FUNCTION_OPS[fn], types))
        elif fn in UNCONVERTED_FUNCTIONS or (fn is torch.einsum and len(_einsum_args(node)[1]) > 1):
            unconverted.append(_float_record(node, _function_name(node), None))
    for site in sites:
        site.macs = layer_macs(site)
    _refuse_name_clashes([s.name for s in sites] + [r.name for r in unconverted])
    _warn_unconverted(unconverted)
    return sites


def _refuse_name_clashes(names: list[str]) -> None:
    """Refuse two layers of one name (a module named like another's call, ``fc@1``)."""
    clashes = sorted(n for n, count in Counter(names).items() if count > 1)
    if clashes:
        raise ValueError(
            f"layer names {clashes} are taken twice: a module's name looks like another "
            "module's call name (calls of a module called more than once are named "
            "<module>@1, <module>@2, ...); rename that module"
        )


def _owner_type(node: fx.Node, op: str) -> tuple[type, ...]:
    """The registered class of the module whose traced forward calls ``node`` (its class as
    tracing recorded it), where that class's op is ``op`` (a ``Conv2d`` subclass calling
    ``F.conv2d``); else ``()``."""
    stack = node.meta.get("nn_module_stack") or {}
    entry = list(stack.values())[-1] if stack else None
    owner = entry[1] if isinstance(entry, tuple) and isinstance(entry[1], type) else None
    for cls in owner.__mro__ if owner is not None else ():
        if MODULE_OPS.get(cls) == op:
            return (cls,)
    return ()


def _function(node: fx.Node) -> Any:
    """The function a ``call_function`` / ``call_method`` node stands for (``None``: other)."""
    if node.op == "call_method":
        return FUNCTION_SPELLINGS.get(node.target) or UNCONVERTED_SPELLINGS.get(node.target)
    if node.op != "call_function" or not _hashable(node.target):
        return None
    return FUNCTION_SPELLINGS.get(node.target, node.target)


def _function_name(node: fx.Node) -> str:
    parent = _enclosing_path(node)
    return f"{parent}.{node.name}" if parent else node.name


def layer_name(node: fx.Node) -> str:
    """The name a layer record of ``node`` takes: the module path of a module call, with
    ``@1``, ``@2``, ... in graph order when several nodes call that module (one name per call,
    each with its own multiplier, count and quantizers; a spec rule for the module path covers
    them all); else the enclosing module path + the node name."""
    if node.op != "call_module":
        return _function_name(node)
    calls = [n for n in node.graph.nodes if n.op == "call_module" and n.target == node.target]
    return str(node.target) if len(calls) == 1 else f"{node.target}@{calls.index(node) + 1}"


def _hashable(target: Any) -> bool:
    try:
        hash(target)
    except TypeError:
        return False
    return True


def _einsum_args(node: fx.Node) -> tuple[Any, tuple[Any, ...]]:
    """An einsum node's equation and operands (given one by one or as one list)."""
    eq = node.args[0] if node.args else node.kwargs.get("equation")
    operands = tuple(node.args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return eq, operands


def einsum_equation(node: fx.Node) -> str | None:
    """The explicit equation (``"ij,jk->ik"`` for ``"ij,jk"``) of a two-operand einsum that is a
    batched matmul, else ``None``."""
    eq, operands = _einsum_args(node)
    if not isinstance(eq, str) or len(operands) != 2:
        return None
    eq = eq.replace(" ", "")
    if "->" not in eq and "..." not in eq:  # implicit output: the once-seen indices, sorted
        ins = eq.replace(",", "")
        eq = f"{eq}->{''.join(sorted(c for c in set(ins) if ins.count(c) == 1))}"
    return eq if einsum_as_bmm(eq) is not None else None


def _float_record(node: fx.Node, name: str, module: nn.Module | None) -> LayerRecord:
    """A float record for a multiply left unconverted, stored on its node."""
    op = "einsum" if _function(node) is torch.einsum else _unconverted_op(node, module)
    record = LayerRecord(name, op, macs=_unconverted_macs(node, op, module), nodes=[node.name])
    node.meta[META_KEY] = record
    return record


def _own_forward_record(node: fx.Node, op: str) -> LayerRecord:
    """A float record for a leaf module whose class computes its own way (its count comes from
    the example run, :mod:`.unlisted`): converting it as its registered class would drop that."""
    record = LayerRecord(layer_name(node), f"{op} (own forward)", nodes=[node.name])
    node.meta[META_KEY] = record
    return record


def _unconverted_op(node: fx.Node, module: nn.Module | None) -> str:
    if module is not None:
        return unconverted_module_op(module)  # type: ignore[return-value]
    return UNCONVERTED_FUNCTIONS[_function(node)]


def _recurrent_macs(node: fx.Node, module: nn.Module) -> int | None:
    """Multiplies of a recurrent module: every weight matrix once per time step and sample
    (an RNN's input ``[T, B, I]``, ``[B, T, I]`` batch-first, ``[T, I]`` unbatched; a cell's
    ``[B, I]`` or ``[I]``); ``None`` without a recorded input shape (a packed sequence)."""
    shape = node_shape(node.args[0]) if node.args else None
    if shape is None:
        return None
    steps = math.prod(shape[:-1])  # time steps x batch (a cell: the batch)
    weights = sum(p.numel() for n, p in module.named_parameters() if n.startswith("weight"))
    return steps * weights


_ADDED_PRODUCT_OPS = ("addmv", "addbmm", "addmm_", "baddbmm_", "addbmm_", "addmv_")


def _unconverted_macs(node: fx.Node, op: str, module: nn.Module | None) -> int | None:
    """Multiplies of a bilinear, recurrent or two-operand einsum layer, or an outer product,
    for the recorded shapes (else ``None``)."""
    out = node_shape(node)
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        return _recurrent_macs(node, module)
    if op in ("outer", "addr", "addr_") and out is not None:
        return math.prod(out)
    if op == "vdot" and out is not None:  # a dot of two vectors: one product per element
        first = node_shape(_call_arg(node, 0))
        return None if first is None else math.prod(first)
    if op == "vecdot":  # one product per element of the broadcast operands
        shapes = [node_shape(_call_arg(node, i)) for i in (0, 1)]
        if None not in shapes:
            return math.prod(torch.broadcast_shapes(*shapes))  # type: ignore[arg-type]
    if op in _ADDED_PRODUCT_OPS:  # input + a [.., M, K] @ b [.., K, N] (or a vector b)
        a, b = node_shape(_call_arg(node, 1)), node_shape(_call_arg(node, 2))
        if a is not None and b is not None:
            return math.prod(a) * (b[-1] if len(b) >= 2 else 1)
    if op == "bilinear" and out is not None:
        w = tuple(module.weight.shape) if module is not None else node_shape(_call_arg(node, 2))
        return None if w is None else math.prod(out) * w[1] * w[2]
    if op == "einsum":
        eq, operands = _einsum_args(node)
        shapes = [node_shape(x) for x in operands]
        if isinstance(eq, str) and len(shapes) == 2 and None not in shapes:
            return _einsum_macs(eq, shapes[0], shapes[1])  # type: ignore[arg-type]
    return None


def _call_arg(node: fx.Node, i: int) -> Any:
    """Positional argument ``i`` of ``node`` (bilinear's weight may come by keyword)."""
    return node.args[i] if len(node.args) > i else node.kwargs.get("weight")


def _warn_unconverted(records: list[LayerRecord]) -> None:
    if not records:
        return
    listed = ", ".join(f"{r.name!r} ({r.op})" for r in records)
    warnings.warn(
        f"appmult-fx cannot convert {len(records)} multiply layer(s), which stay float "
        f"(float records in amx.layers()): {listed}. Write a convertible form to approximate "
        "them: torch.matmul, F.linear, or a two-operand einsum without '...' in which every "
        "index is in the output or in both operands",
        stacklevel=4,  # the caller of amx.convert
    )


def matmul_operands(site: LayerSite) -> tuple[Any, Any]:
    """The left (multiplier's first) and right operand of a matmul-like site."""
    node, args, kw = site.node, list(site.node.args), site.node.kwargs
    if site.op == "einsum":
        return _einsum_args(node)[1]  # type: ignore[return-value]
    if site.op in _ADDED_PRODUCTS:
        first, second = _ADDED_PRODUCTS[site.op]
        args += [None] * 3
        return kw.get(first, args[1]), kw.get(second, args[2])
    args += [None] * 2
    first = kw.get("input", args[0]) if node.op != "call_module" else args[0]
    second = next((kw[k] for k in ("other", "mat2", "vec", "tensor") if k in kw), args[1])
    return first, second


# ``beta * input + alpha * (a @ b)`` ops: keyword names of their two factors.
_ADDED_PRODUCTS = {"baddbmm": ("batch1", "batch2"), "addmm": ("mat1", "mat2")}


def node_shape(node: Any) -> tuple[int, ...] | None:
    """A node's output shape as recorded by ``ShapeProp`` (``None`` if not recorded)."""
    if isinstance(node, fx.Node) and node.op == "get_attr":
        value = _attr(node)
        return None if value is None else tuple(value.shape)
    meta = getattr(node, "meta", {}).get("tensor_meta")
    return (
        tuple(int(d) for d in meta.shape) if meta is not None and hasattr(meta, "shape") else None
    )


def _attr(node: fx.Node) -> Any:
    obj: Any = node.graph.owning_module
    for part in str(node.target).split("."):
        obj = getattr(obj, part, None)
    return obj if hasattr(obj, "shape") else None


def reduction_length(site: LayerSite) -> int | None:
    """Products summed per output element (K), or ``None`` when shapes are unknown."""
    if site.op in ("matmul", "bmm", "baddbmm", "addmm"):
        a = node_shape(matmul_operands(site)[0])
        return None if a is None else int(a[-1])
    if (
        site.module is not None
        and hasattr(site.module, "weight")
        and not site.op.startswith("conv_transpose")
    ):
        w = site.module.weight.shape
        return int(math.prod(w[1:]))
    if site.op in ("conv1d", "conv2d", "conv3d", "linear"):
        weight = site.node.kwargs.get(
            "weight", site.node.args[1] if len(site.node.args) > 1 else None
        )
        w = node_shape(weight)
        return None if w is None else int(math.prod(w[1:]))
    return None


def layer_macs(site: LayerSite) -> int | None:
    """Multiplies a layer performs for the shapes ``ShapeProp`` recorded (else ``None``)."""
    if site.macs is not None:
        return site.macs
    if site.op == "einsum":
        a, b = (node_shape(x) for x in matmul_operands(site))
        return None if a is None or b is None else _einsum_macs(str(site.node.args[0]), a, b)
    if site.op.startswith(
        "conv_transpose"
    ):  # every input element meets (O/groups * kernel) weights
        x = site.node.args[0] if site.node.args else site.node.kwargs.get("input")
        w = (
            site.module.weight
            if site.module is not None
            else site.node.kwargs.get("weight", site.node.args[1])
        )
        shape_x, shape_w = node_shape(x), (tuple(w.shape) if hasattr(w, "shape") else node_shape(w))
        return (
            None
            if shape_x is None or shape_w is None
            else int(math.prod(shape_x) * math.prod(shape_w[1:]))
        )
    out, k = node_shape(site.node), reduction_length(site)
    return None if out is None or k is None else int(math.prod(out)) * k


def _einsum_macs(equation: str, a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Multiplies of a two-operand ``einsum`` (the product of every index's size; an ellipsis
    stands for the broadcast dimensions it covers)."""
    lhs, rhs = equation.replace(" ", "").split("->")[0].split(",")
    broadcast = torch.broadcast_shapes(_ellipsis_dims(lhs, a), _ellipsis_dims(rhs, b))
    sizes = dict(zip(lhs.replace("...", ""), _without_ellipsis(lhs, a)))
    for c, n in zip(rhs.replace("...", ""), _without_ellipsis(rhs, b)):
        sizes[c] = max(n, sizes.get(c, 1))
    return int(math.prod(sizes.values()) * math.prod(broadcast))


def _ellipsis_dims(labels: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if "..." not in labels:
        return ()
    before = labels.index("...")
    return shape[before : len(shape) - (len(labels) - before - 3)]


def _without_ellipsis(labels: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if "..." not in labels:
        return shape
    before = labels.index("...")
    after = len(labels) - before - 3
    return shape[:before] + (shape[len(shape) - after :] if after else ())
