"""Dropout whose train/eval mode torch.fx fixed while tracing.

``F.dropout(x, p, training=self.training)`` (or ``dropout_p=p if self.training else 0`` for
``F.scaled_dot_product_attention``) reads the module's mode once, when torch.fx traces the
forward: the converted model then drops out, or not, whatever ``gm.train()`` / ``gm.eval()``
say. ``nn.Dropout`` modules stay modules and follow the mode. This pass cannot tell a fixed
mode from a constant the author meant, so it warns and changes nothing.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

# function -> (position of p, default p, position of training, default training)
_FUNCTIONAL_DROPOUT: dict[Any, tuple[int, float | None, int, bool | None]] = {
    F.dropout: (1, 0.5, 2, True),
    F.dropout1d: (1, 0.5, 2, True),
    F.dropout2d: (1, 0.5, 2, True),
    F.dropout3d: (1, 0.5, 2, True),
    F.alpha_dropout: (1, 0.5, 2, False),
    F.feature_alpha_dropout: (1, 0.5, 2, False),
    torch.dropout: (1, None, 2, None),
}


@functools.cache
def mode_modules() -> tuple[type, ...]:
    """Modules the tracer keeps as one call so that they follow ``gm.train()`` / ``gm.eval()``:
    torchvision's ``StochasticDepth``, whose traced forward would fix its mode (swin_t,
    convnext, efficientnet drop residual branches with it while training)."""
    from torchvision.ops import StochasticDepth

    return (StochasticDepth,)


def _argument(node: fx.Node, position: int, name: str, default: Any) -> Any:
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(name, default)


def _fixed(node: fx.Node) -> str | None:
    """How ``node``'s dropout is fixed (``"training=True, p=0.1"``), or None."""
    if node.op != "call_function":
        return None
    if node.target is F.scaled_dot_product_attention:
        p = _argument(node, 5, "dropout_p", 0.0)
        return f"dropout_p={p}" if isinstance(p, float | int) and p > 0 else None
    spec = _FUNCTIONAL_DROPOUT.get(node.target)
    if spec is None:
        return None
    p_at, p_default, training_at, training_default = spec
    p = _argument(node, p_at, "p", p_default)
    name = {torch.dropout: "train"}.get(node.target, "training")
    training = _argument(node, training_at, name, training_default)
    if isinstance(training, bool) and isinstance(p, float | int) and p > 0:
        return f"p={p}, training={training}"
    return None


def warn_fixed_dropout(gm: fx.GraphModule) -> None:
    """One warning naming the functional dropouts of ``gm`` whose mode tracing fixed."""
    fixed = [f"{n.name} ({how})" for n in gm.graph.nodes if (how := _fixed(n)) is not None]
    if fixed:
        warnings.warn(
            f"appmult-fx: {len(fixed)} functional dropout(s) have a mode that torch.fx fixed "
            f"when tracing ({', '.join(fixed[:4])}{', ...' if len(fixed) > 4 else ''}): "
            "gm.train() / gm.eval() will not switch them (scaled_dot_product_attention drops "
            "out whenever dropout_p > 0). Use nn.Dropout modules, or keep that block a leaf "
            "module with convert(..., leaf_modules=[...]).",
            stacklevel=3,
        )
