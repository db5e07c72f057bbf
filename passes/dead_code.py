"""Erasing the nodes a graph edit left unused, and nothing else.

``fx.Graph.eliminate_dead_code`` erases every node whose result nothing uses unless torch lists it
as side-effectful, and torch lists neither in-place tensor writes (``y.add_(1)``,
``F.relu(y, inplace=True)``), nor modules that update their buffers (batch norm in training),
nor random draws (dropout): erasing those silently changes what a model computes. So the edits
here (export's freezing, dropping the ``relu_input`` arguments) note the nodes the model itself
leaves unused before they edit (:func:`unused_nodes`) and afterwards erase only nodes *they*
left unused (:func:`erase_unused`), and of those none that may write to a tensor
(:func:`may_write`).
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


def unused_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes of ``gm`` whose results nothing uses (what the model computes for its own
    sake: writes, state updates, random draws), to keep through an edit."""
    return {n for n in gm.graph.nodes if not n.users and n.op != "output"}


def erase_unused(gm: fx.GraphModule, keep: set[fx.Node]) -> None:
    """Erase, repeatedly, the nodes of ``gm`` that nothing uses, except those in ``keep``
    (:func:`unused_nodes` before the edit), impure ones and any that may write
    (:func:`may_write`)."""
    while True:
        dead = [
            n
            for n in gm.graph.nodes
            if not n.users
            and n.op not in ("placeholder", "output")
            and n not in keep
            and not n.is_impure()
            and not may_write(gm, n)
        ]
        if not dead:
            return
        for node in reversed(dead):
            gm.graph.erase_node(node)
