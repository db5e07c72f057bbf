"""Which conv inputs are a ReLU's output: there the ReLU's backward discards the input gradient
wherever the input is 0, so the LUT input gradient need not be computed there
(``approx_conv2d``'s ``relu_input``).

Only a plain ReLU qualifies: ``nn.ReLU`` without hooks (a forward hook may change what the
output holds, a backward hook may pass a gradient where it is 0; checked again at every call,
:func:`unless_hooked`), ``F.relu`` / ``torch.relu`` and their in-place forms, and the
``relu`` / ``relu_`` tensor methods.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules import module as module_hooks

from .context import RewriteContext

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


def _hooked(module: nn.Module) -> bool:
    """Whether ``module`` has hooks of its own, or every module has some."""
    hooks = (
        module._forward_hooks,
        module._forward_pre_hooks,
        module._backward_hooks,
        module._backward_pre_hooks,
    )
    return any(hooks) or _global_hooks()


def is_relu_output(gm: fx.GraphModule, node: Any) -> bool:
    """Whether ``node`` is the output of a plain ReLU (see the module docstring)."""
    if not isinstance(node, fx.Node) or _global_hooks():
        return False
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target in _RELU_METHODS
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        return type(module) is nn.ReLU and not _hooked(module)
    return False


def unless_hooked(x: torch.Tensor, relu: nn.Module) -> torch.Tensor | None:
    """``x`` while the ReLU module it comes from has no hooks, else ``None``: checked at every
    call, as a hook registered after conversion (an attribution method's, say) may pass a
    gradient where the ReLU's output is 0."""
    return None if _hooked(relu) else x


def relu_arguments(
    ctx: RewriteContext, relu_node: fx.Node, pads: list[int], mode: str
) -> dict[str, Any]:
    """The keyword arguments (:data:`RELU_KWARGS`) for a conv whose input ``relu_node`` is a
    ReLU's output and that pads it by ``pads`` (``F.pad`` order) in ``mode``: that node, behind
    :func:`unless_hooked` for an ``nn.ReLU`` module, unpadded (the op pads it again in its
    backward, so it keeps no padded copy), and the padding."""
    x: Any = relu_node
    if relu_node.op == "call_module":
        module = ctx.node("get_attr", str(relu_node.target), (), name=f"{relu_node.name}_module")
        name = f"{relu_node.name}_unhooked"
        x = ctx.node("call_function", unless_hooked, (relu_node, module), {}, name=name)
    return {RELU_INPUT: x, "relu_pad": list(pads) if any(pads) else None, "relu_pad_mode": mode}
