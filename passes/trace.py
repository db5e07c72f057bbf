"""Symbolic tracing with leaf modules and a clear report of the module that failed."""

from __future__ import annotations

import copy
import types
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import fx, nn

from .attention import TRACE_THROUGH, decompose_sdpa, swap_attention, tracing_patches
from .fixed_modes import mode_modules, warn_fixed_dropout
from .leaf_layers import LEAF_KEY
from .matmul_module import Matmul
from .ops_table import module_op, overrides_computation
from .records import META_KEY
from .unlisted import CountingShapeProp

SNAPSHOT = "appmult_graph"  # the converted GraphModule's GraphSnapshot submodule
_NODE_KEYS = (META_KEY, LEAF_KEY)  # node.meta entries kept through pickling


class TraceFailure(RuntimeError):
    """``torch.fx`` could not trace a module; names it and says how to mark it a leaf."""


# Class attributes a subclass may define and still compute exactly as its registered base.
_INERT = {"__init__", "extra_repr", "reset_parameters", "__repr__", "__constants__"}


def _plain_subclass(m: nn.Module) -> bool:
    """Whether ``m``'s class subclasses a registered layer class (``class MyLinear(nn.Linear)``)
    without changing how it computes (no method, property or descriptor of its own between it
    and that class): it is kept as one call, as the registered class is, instead of traced."""
    found = module_op(m)
    if found is None or type(m) is found[0] or overrides_computation(m):
        return False
    mro = type(m).__mro__
    for cls in mro[: mro.index(found[0])]:
        for key, value in vars(cls).items():
            dunder = key.startswith("__") and key.endswith("__")
            if key in _INERT or (dunder and not callable(value)):
                continue
            if callable(value) or hasattr(value, "__get__"):
                return False
    return True


class _Tracer(fx.Tracer):
    def __init__(self, leaf_names: set[str], leaf_types: tuple[type, ...]) -> None:
        super().__init__()
        self.leaf_names = leaf_names
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or (
            self.leaf_types and isinstance(m, self.leaf_types)
        ):
            return True
        if isinstance(m, (Matmul, *mode_modules())) or _plain_subclass(m):
            return True
        if type(m) in TRACE_THROUGH:
            return False
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except TraceFailure:
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised with the module's name
            name = self.path_of_module(m) or "<root>"
            raise TraceFailure(
                f"torch.fx could not trace module {name!r} ({type(m).__name__}): "
                f"{type(exc).__name__}: {exc}\n"
                f"Mark it a leaf so it is kept as one opaque call (its multiplies then stay "
                f"float): convert(..., leaf_modules=[{name!r}]) or "
                f"leaf_modules=[{type(m).__name__}] (amx.search takes the same argument); "
                "or pass concrete_args for data-dependent arguments."
            ) from exc


class GraphSnapshot(nn.Module):
    """A stateless submodule of a converted GraphModule that pickles the node names and
    appmult records of its graph.

    torch.fx pickles a GraphModule as its generated code and re-traces that code on loading,
    which renames nodes and drops ``node.meta``; :class:`Retracer` puts both back. (A
    submodule, as torch.fx keeps submodules, not ``gm.meta``, through pickling and copying.)
    """

    def __init__(self, graph: fx.Graph | None, nodes: list[tuple] | None = None) -> None:
        super().__init__()
        self.graph, self.nodes = graph, nodes

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.graph is not None:
            state["nodes"] = [
                (n.name, n.op, _target_key(n), {k: n.meta[k] for k in _NODE_KEYS if k in n.meta})
                for n in self.graph.nodes
            ]
        state["graph"] = None
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> GraphSnapshot:
        copied = GraphSnapshot(copy.deepcopy(self.graph, memo), copy.deepcopy(self.nodes, memo))
        return copied.train(self.training)

    def restore(self, traced: fx.Graph) -> fx.Graph:
        """``traced`` (the re-traced code) with the saved node names and records; ``traced``
        itself, with a warning, where its nodes do not match the saved ones (a graph replaced
        after conversion): the model computes the same, but ``amx.layers`` and export no
        longer see its layer records."""
        saved = self._match(list(traced.nodes))
        if saved is None:
            warnings.warn(
                "appmult-fx: the unpickled model's code does not match the graph saved with it "
                "(was the graph replaced after conversion?); it computes as its code says, but "
                "its layer records are lost (amx.layers, export)",
                stacklevel=2,
            )
            return traced
        graph = fx.Graph(tracer_cls=Retracer)
        env: dict[fx.Node, fx.Node] = {}
        for node in traced.nodes:
            name, meta = saved[node]
            args, kwargs = fx.map_arg((node.args, node.kwargs), env.__getitem__)
            new = graph.create_node(node.op, node.target, args, kwargs, name, node.type)
            new.meta.update({**node.meta, **meta})
            env[node] = new
        self.graph = graph
        return graph

    def _match(self, traced: list[fx.Node]) -> dict[fx.Node, tuple[str, dict]] | None:
        """The saved name and meta of each re-traced node, or None where they do not match
        (op and target): nodes other than ``get_attr`` in order, ``get_attr`` nodes by
        attribute (re-tracing puts a buffer's or constant's ``get_attr`` at its first use, not
        where it was)."""
        entries = self.nodes or []
        others = [e for e in entries if e[1] != "get_attr"]
        attrs: dict[str, list[tuple]] = {}
        for e in entries:
            if e[1] == "get_attr":
                attrs.setdefault(e[2], []).append(e)
        plain = [n for n in traced if n.op != "get_attr"]
        if [(n.op, _target_key(n)) for n in plain] != [(e[1], e[2]) for e in others]:
            return None
        out = {n: (e[0], e[3]) for n, e in zip(plain, others, strict=True)}
        for n in traced:
            if n.op == "get_attr":
                same = attrs.get(_target_key(n))
                if not same:
                    return None
                e = same.pop(0)
                out[n] = (e[0], e[3])
        if any(attrs.values()) or len({name for name, _ in out.values()}) != len(out):
            return None
        return out


def _target_key(node: fx.Node) -> str:
    """What a node calls or reads, as a string that survives pickling: a module path, method
    or attribute name, or a function's ``module.qualname``."""
    target = node.target
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None) or ""
    return f"{module}.{getattr(target, '__qualname__', None) or repr(target)}"


class Retracer(fx.Tracer):
    """The tracer torch.fx uses to rebuild a converted GraphModule from its pickled code:
    every plain function the code calls stays one node (as ``torch.fx.wrap`` made it), and
    the graph's :class:`GraphSnapshot` restores node names and records."""

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        """Trace ``root`` (torch.fx's code-only module) and restore the saved graph."""
        code = type(root).forward.__globals__.values()
        self._autowrap_function_ids.update(id(f) for f in code if isinstance(f, types.FunctionType))
        graph = super().trace(root, concrete_args)
        snapshot = getattr(root, SNAPSHOT, None)
        return snapshot.restore(graph) if isinstance(snapshot, GraphSnapshot) else graph

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        """A new ``get_attr`` node for every read of a parameter, as the converted graph has
        (one per layer call of a module called twice), not one shared by all reads."""
        return super().getattr(attr, attr_val, {})


def trace(
    model: nn.Module,
    leaf_modules: Iterable[str | type] = (),
    concrete_args: dict[str, Any] | None = None,
) -> fx.GraphModule:
    """Trace a deep copy of ``model`` (the original is never modified) into a GraphModule.

    ``leaf_modules`` holds qualified module names or module classes to keep opaque.
    """
    model = copy.deepcopy(model)
    names = {m for m in leaf_modules if isinstance(m, str)}
    types = tuple(m for m in leaf_modules if isinstance(m, type))
    known = {n for n, _ in model.named_modules()}
    missing = sorted(names - known)
    if missing:
        raise ValueError(f"leaf_modules {missing} are not modules of the model")
    swap_attention(model, names, types)  # nn.MultiheadAttention -> explicit projections/matmuls
    tracer = _Tracer(names, types)
    try:
        with tracing_patches():  # nn.Transformer* take their traceable code path
            graph = tracer.trace(model, concrete_args=concrete_args)
    except TraceFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - the root forward itself failed
        raise TraceFailure(
            f"torch.fx could not trace the model's forward ({type(model).__name__}): "
            f"{type(exc).__name__}: {exc}\nPass concrete_args for data-dependent arguments, or "
            "mark the offending submodules as leaf_modules."
        ) from exc
    for node in graph.nodes:  # annotations read as strings (``from __future__ import
        if isinstance(node.type, str):  # annotations``) break pickling on torch 2.11
            node.type = None
    name = model.__class__.__name__
    graph._tracer_cls = Retracer  # torch.fx re-traces pickled GraphModules with it
    gm = fx.GraphModule(tracer.root, graph, name)
    gm.add_module(SNAPSHOT, GraphSnapshot(gm.graph))
    warn_fixed_dropout(gm)
    decompose_sdpa(gm)
    gm.meta["appmult_leaf_modules"] = sorted(names) + [t.__name__ for t in types]
    return gm


def example_shapes(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...]) -> None:
    """Annotate every node with ``meta["tensor_meta"]`` and the multiplies it computes
    (:mod:`.unlisted`) by running ``example_inputs``."""
    was_training = gm.training
    gm.eval()
    with torch.no_grad():
        CountingShapeProp(gm).propagate(*example_inputs)
    gm.train(was_training)
