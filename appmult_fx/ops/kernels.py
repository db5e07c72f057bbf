"""Compiled kernel backends for the LUT-GEMM products (CPU C++ and CUDA).

``backend_for(device)`` returns an object with ``lut_bmm``, ``lut_bmm_grad_a`` and
``lut_bmm_grad_w`` (same signatures as :mod:`.reference`), or ``None`` when no compiled
kernel serves that device, in which case the op layer uses the reference.
"""

from __future__ import annotations

import torch


def backend_for(device: torch.device):  # noqa: ANN201 - replaced by the kernel issue
    """The compiled backend for ``device``, or ``None`` (reference path)."""
    return None
