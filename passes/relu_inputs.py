"""Which conv inputs are a ReLU's output: there the ReLU's backward discards the input gradient
wherever the input is 0, so the LUT input gradient need not be computed there
(``approx_conv2d``'s ``relu_input``).

Only a plain ReLU qualifies: ``nn.ReLU`` without hooks (a forward hook may change what the
output holds, a backward hook may pass a gradient where it is 0; checked again at every call,
:func:`unless_hooked`), ``F.relu`` / ``torch.relu`` and their in-place forms, and the
``relu`` / ``relu_`` tensor methods; also behind ``nn.Identity`` modules without hooks (the
same tensor: a model's disabled max-pool, say). Autograd keeps a ReLU's output for its
backward, so an in-place change to that output fails the backward instead of going
unnoticed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules import module as module_hooks

from appmult_fx.ops.graph_leaf import graph_leaf

from .context import RewriteContext
from .dead_code import erase_unused, unused_nodes

_RELU_FUNCTIONS = (F.relu, F.relu_, torch.relu, torch.relu_)
_RELU_METHODS = ("relu", "relu_")
RELU_INPUT = "relu_input"  # the conv GEMM node's keyword arguments (export drops them)
RELU_KWARGS = (RELU_INPUT, "relu_pad", "relu_pad_mode")


def _global_hooks() -> bool:
    """Whether any module hook is registered for every module (also when torch no longer keeps
    them where this looks: then no ReLU is trusted)."""
    return any(
        getattr(module_hooks, name, True)
        for name in (
            "_global_forward_hooks",
            "_global_forward_pre_hooks",
            "_global_backward_hooks",
            "_global_backward_pre_hooks",
        )
    )


def own_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has hooks of its own (the global ones: :func:`_global_hooks`)."""
    hooks = (
        module._forward_hooks,
        module._forward_pre_hooks,
        module._backward_hooks,
        module._backward_pre_hooks,
    )
    return any(hooks)


def _behind_identities(gm: fx.GraphModule, node: Any) -> tuple[Any, list[fx.Node]]:
    """The node behind the ``nn.Identity`` modules ``node`` is the output of (the same tensor),
    and those modules' nodes."""
    identities: list[fx.Node] = []
    while (
        isinstance(node, fx.Node)
        and node.op == "call_module"
        and type(gm.get_submodule(str(node.target))) is nn.Identity
        and len(node.args) == 1
        and not node.kwargs
    ):
        identities.append(node)
        node = node.args[0]
    return node, identities


def is_relu_output(gm: fx.GraphModule, node: Any) -> bool:
    """Whether ``node`` is the output of a plain ReLU, possibly behind ``nn.Identity`` modules
    without hooks (see the module docstring)."""
    node, identities = _behind_identities(gm, node)
    if not isinstance(node, fx.Node) or _global_hooks():
        return False
    if any(own_hooks(gm.get_submodule(str(n.target))) for n in identities):
        return False
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target in _RELU_METHODS
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        return type(module) is nn.ReLU and not own_hooks(module)
    return False


@graph_leaf
def unless_hooked(
    x: torch.Tensor, relu: nn.Module | None, *identities: nn.Module
) -> torch.Tensor | None:
    """``x`` while the ReLU module (``None``: a ReLU function) and the identity modules it comes
    from are still a plain ``nn.ReLU`` and ``nn.Identity`` modules without hooks, else ``None``:
    checked at every call, as a module swapped after conversion (a quantizer in an identity's
    place, say) or a hook registered since (an attribution method's) may pass a gradient where
    the ReLU's output is 0, or change what the conv reads."""
    plain = (relu is None or type(relu) is nn.ReLU) and all(
        type(m) is nn.Identity for m in identities
    )
    hooked = _global_hooks() or any(own_hooks(m) for m in (relu, *identities) if m is not None)
    return x if plain and not hooked else None


def relu_arguments(
    ctx: RewriteContext, conv_input: fx.Node, pads: list[int], mode: str
) -> dict[str, Any]:
    """The keyword arguments (:data:`RELU_KWARGS`) for a conv whose input ``conv_input`` is a
    ReLU's output (:func:`is_relu_output`) and that pads it by ``pads`` (``F.pad`` order) in
    ``mode``: that node, behind :func:`unless_hooked` where modules are involved, unpadded (the
    op pads it again in its backward, so it keeps no padded copy), and the padding."""
    relu, identities = _behind_identities(ctx.gm, conv_input)
    x: Any = conv_input
    if relu.op == "call_module" or identities:

        def attr(n: fx.Node) -> fx.Node:
            return ctx.node("get_attr", str(n.target), (), name=f"{n.name}_module")

        modules = (attr(relu) if relu.op == "call_module" else None, *map(attr, identities))
        name = f"{conv_input.name}_unhooked"
        x = ctx.node("call_function", unless_hooked, (conv_input, *modules), {}, name=name)
    return {RELU_INPUT: x, "relu_pad": list(pads) if any(pads) else None, "relu_pad_mode": mode}


def drop_relu_inputs(gm: fx.GraphModule) -> None:
    """Remove the convs' :data:`RELU_KWARGS` from ``gm`` (in place; they serve the backward
    only) and the nodes that only they used; recompiles."""
    keep = unused_nodes(gm)
    for node in gm.graph.nodes:
        if RELU_INPUT in node.kwargs:
            node.kwargs = {k: v for k, v in node.kwargs.items() if k not in RELU_KWARGS}
    erase_unused(gm, keep)
    gm.recompile()
