"""Dead-code elimination that keeps in-place operations.

``fx.Graph.eliminate_dead_code`` erases a node whose result nothing uses unless torch lists it as
side-effectful, and torch does not list in-place tensor operations: it would erase a
``y.add_(1)`` or ``F.relu(y, inplace=True)`` whose result the model discards, silently changing
what the model computes. :func:`erase_dead_nodes` keeps every node that may write to a tensor.
"""

from __future__ import annotations

import inspect
import operator

from torch import fx

# operator functions that write to their first argument (x += y, x[i] = v, ...)
_IN_PLACE_OPERATORS = {
    getattr(operator, name)
    for name in dir(operator)
    if name.startswith("i") and name[1:] in dir(operator) and name not in ("index", "inv", "invert")
} | {operator.setitem, operator.delitem}


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


def may_write(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` may write to a tensor in place: an ``inplace=True`` argument, a
    function or method whose name ends in ``_`` (not a dunder), an in-place operator, or a
    module with an ``inplace`` flag set."""
    if node.op == "call_function" and _inplace_argument(node) or node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(str(node.target)), "inplace", False))
    if node.op not in ("call_function", "call_method"):
        return False
    name = _name(node.target)
    if node.target in _IN_PLACE_OPERATORS:
        return True
    return name.endswith("_") and not name.endswith("__")


def erase_dead_nodes(gm: fx.GraphModule) -> None:
    """Erase the nodes of ``gm`` whose results nothing uses, keeping impure nodes and every node
    that may write to a tensor (:func:`may_write`)."""
    gm.graph.eliminate_dead_code(is_impure_node=lambda n: n.is_impure() or may_write(gm, n))
