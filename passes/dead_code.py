"""Dead-code elimination that keeps in-place writes someone can observe.

``fx.Graph.eliminate_dead_code`` erases a node whose result nothing uses unless torch lists it as
side-effectful, and torch does not list in-place tensor operations: it would erase a
``y.add_(1)`` or ``F.relu(y, inplace=True)`` whose result the model discards, silently changing
what the model computes. :func:`erase_dead_nodes` keeps every node that may write to a tensor
(:func:`may_write`) unless nothing can see the write: a write to a tensor that only the write
itself and other such writes reach (say ``self.conv.weight.data.clamp_()`` in a forward whose
conv was frozen away) goes with the tensor. A write to a parameter or buffer counts as
observed while any other node reads that state (another ``get_attr`` of it, or the module
holding it).
"""

from __future__ import annotations

import inspect
import operator

from torch import fx, nn

# operator functions that write to their first argument (x += y, x[i] = v, ...)
_IN_PLACE_OPERATORS = {
    getattr(operator, name)
    for name in dir(operator)
    if name.startswith("i") and name[1:] in dir(operator) and name not in ("index", "inv", "invert")
} | {operator.setitem, operator.delitem}
# Packages whose modules write to their inputs only when they say so (an ``inplace`` flag).
_KNOWN_MODULES = ("torch.nn.", "appmult_fx.")


def _name(target: object) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", "")


def _inplace_argument(node: fx.Node) -> bool:
    """Whether a call passes ``inplace=True``, by keyword or by position."""
    if node.kwargs.get("inplace") is True:
        return True
    try:
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):  # no signature (a builtin), or not this call's
        return False
    return bound.arguments.get("inplace") is True


def _writing_name(name: str) -> bool:
    """Whether a function or method of this name writes to its first argument: ``add_``,
    ``__iadd__``, ``__setitem__``; not other dunders."""
    if name in ("__setitem__", "__delitem__"):
        return True
    if name.startswith("__i") and name.endswith("__"):
        return hasattr(operator, f"__{name[3:]}")
    return name.endswith("_") and not name.endswith("__")


def _module_may_write(module: nn.Module) -> bool:
    """A module with its ``inplace`` flag set, or one from outside torch.nn and this package (a
    user's leaf module, which may write to its input)."""
    if getattr(module, "inplace", False):
        return True
    return not type(module).__module__.startswith(_KNOWN_MODULES)


def may_write(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` may write to a tensor in place: an ``out=`` or ``inplace=True``
    argument, a writing function or method name (:func:`_writing_name`), an in-place operator,
    or a module that may (:func:`_module_may_write`)."""
    if node.op == "call_module":
        return _module_may_write(gm.get_submodule(str(node.target)))
    if node.op not in ("call_function", "call_method"):
        return False
    if node.kwargs.get("out") is not None or node.target in _IN_PLACE_OPERATORS:
        return True
    return _writing_name(_name(node.target)) or (
        node.op == "call_function" and _inplace_argument(node)
    )


def _observed(node: fx.Node) -> bool:
    """Whether a write by ``node`` may be seen: anything but a write (to its first argument) to
    a tensor that is not a graph input and whose aliases reach neither the output nor any other
    node. Every call (a module's too: ``nn.Identity`` returns its input) is taken to return a
    view of its first argument (so its result counts as an alias, and any use of an alias as a
    possible read): this keeps a write whenever it could matter."""
    target = node.kwargs.get("out", node.args[0] if node.args else None)
    if node.op == "call_module" or not isinstance(target, fx.Node):
        return True
    root = target
    while root.op.startswith("call_") and root.args and isinstance(root.args[0], fx.Node):
        root = root.args[0]
    if root.op == "placeholder" or root.op == "get_attr" and _state_read(node.graph, root):
        return True
    aliases, frontier = {root}, [root]
    while frontier:  # the root and everything reached through first arguments
        for user in frontier.pop().users:
            if user not in aliases and user.args and user.args[0] in aliases:
                aliases.add(user)
                frontier.append(user)
    if any(a.op == "output" or a is not node and a.is_impure() for a in aliases):
        return True  # a view or a reader reaches the output
    return any(user not in aliases for a in aliases for user in a.users)


def _related(path: str, other: str) -> bool:
    """Whether two attribute paths name the same object or one holds the other."""
    return path == other or path.startswith(other + ".") or other.startswith(path + ".")


def _state_read(graph: fx.Graph, root: fx.Node) -> bool:
    """Whether another node reads the parameter or buffer ``root`` fetches: a ``get_attr`` of
    it (or of what holds it, or of what it holds) that something uses, or a module call that
    reads it itself."""
    path = str(root.target)
    return any(
        n is not root
        and n.op in ("get_attr", "call_module")
        and _related(path, str(n.target))
        and (n.op == "call_module" or n.users)
        for n in graph.nodes
    )


def erase_dead_nodes(gm: fx.GraphModule) -> None:
    """Erase the nodes of ``gm`` whose results nothing uses, repeatedly, keeping impure nodes
    and every write someone may observe (:func:`may_write`, :func:`_observed`)."""
    while True:
        dead = [
            n
            for n in gm.graph.nodes
            if not n.users
            and n.op not in ("placeholder", "output")
            and not n.is_impure()
            and not (may_write(gm, n) and _observed(n))
        ]
        if not dead:
            return
        for node in reversed(dead):
            gm.graph.erase_node(node)
