"""Input gradients in their input's layout (autograd's gradient layout contract).

A custom op's backward that returns a gradient with other strides than its input makes
``AccumulateGrad`` copy it every step, or (size-1 dimensions, e.g. a 1x1 convolution's weight)
keep strides that differ from the parameter's, which DDP reports as ``grad strides do not match
bucket view strides`` and copies into its bucket each step.
"""

from __future__ import annotations

import torch
from torch import Tensor


def like_input(grad: Tensor | None, inp: Tensor) -> Tensor | None:
    """``grad`` with the strides of ``inp`` (copied only when they differ)."""
    if grad is None or grad.stride() == inp.stride():
        return grad
    out = torch.empty_like(inp, dtype=grad.dtype, memory_format=torch.preserve_format)
    return out.copy_(grad)
