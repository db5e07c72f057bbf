"""``Matmul``: ``torch.matmul`` as a module, so a product of two activations has a name.

Kept apart from :mod:`.attention` so that the attention twins (:mod:`.attention`,
:mod:`.window_attention`) and the op table can all use it without importing each other.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Matmul(nn.Module):
    """``torch.matmul(a, b)`` as a module, so the product has a module name of its own."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """``a @ b`` (``a`` is the multiplier's first operand)."""
        return torch.matmul(a, b)
