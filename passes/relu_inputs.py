"""Which conv inputs are a ReLU's output: there the ReLU's backward discards the input gradient
wherever the input is 0, so the LUT input gradient need not be computed there
(``approx_conv2d``'s ``relu_input``).

Only a plain ReLU qualifies: ``nn.ReLU`` without hooks (a forward hook may change what the
output holds, a backward hook would see the gradient there), ``F.relu`` / ``torch.relu`` and
their in-place forms, and the ``relu`` / ``relu_`` tensor methods.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules import module as module_hooks

_RELU_FUNCTIONS = (F.relu, F.relu_, torch.relu, torch.relu_)
_RELU_METHODS = ("relu", "relu_")


def _global_hooks() -> bool:
    """Whether any module hook is registered for every module."""
    return any(
        getattr(module_hooks, name, None)
        for name in (
            "_global_forward_hooks",
            "_global_forward_pre_hooks",
            "_global_backward_hooks",
            "_global_backward_pre_hooks",
        )
    )


def _plain_relu(module: nn.Module) -> bool:
    """An ``nn.ReLU`` without hooks of its own."""
    hooks = (
        module._forward_hooks,
        module._forward_pre_hooks,
        module._backward_hooks,
        module._backward_pre_hooks,
    )
    return type(module) is nn.ReLU and not any(hooks)


def is_relu_output(gm: fx.GraphModule, node: Any) -> bool:
    """Whether ``node`` is the output of a plain ReLU (see the module docstring)."""
    if not isinstance(node, fx.Node) or _global_hooks():
        return False
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target in _RELU_METHODS
    if node.op == "call_module":
        return _plain_relu(gm.get_submodule(str(node.target)))
    return False
