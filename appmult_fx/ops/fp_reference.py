"""Pure-PyTorch reference FP LUT-GEMM: the oracle the compiled FP kernels are tested against.

``fp_bmm(a [B,M,K], b [B,K,N], table [2**m, 2**m], m, rounding) -> [B,M,N]``: the operands are
cast to the (1, 8, m) format (:func:`luts.fp_format.cast_bits`), then
``Y[b,i,j] = (((0 + P_0) + P_1) + ... + P_{K-1})`` in float32, where
``P_k`` is the LUT product of ``a[b,i,k]`` and ``b[b,k,j]`` (:func:`luts.fp_format.product_bits`).
The order (sequential over k, starting from +0.0) is part of the contract: the CPU and CUDA
kernels add in the same order and are bit-identical. Work is chunked over k so no
``M x K x N`` tensor is ever held.
"""

from __future__ import annotations

import torch

from ..luts.fp_format import cast_bits, product_bits

_CHUNK_ELEMENTS = 1 << 22  # largest block of products (elements) held at once


def fp_bmm(
    a: torch.Tensor, b: torch.Tensor, table: torch.Tensor, m: int, rounding: str = "truncate"
) -> torch.Tensor:
    """Sequential-k float32 sum of the LUT products of ``a @ b`` (see the module doc)."""
    bsz, rows, k = a.shape
    cols = b.shape[2]
    abits = cast_bits(a.contiguous().view(torch.int32), m, rounding)
    bbits = cast_bits(b.contiguous().view(torch.int32), m, rounding)
    table = table.to(device=a.device, dtype=torch.int32)
    out = torch.zeros(bsz, rows, cols, dtype=torch.float32, device=a.device)
    step = max(1, min(k, _CHUNK_ELEMENTS // max(1, bsz * rows * cols)))
    for k0 in range(0, k, step):
        k1 = min(k, k0 + step)
        prod = product_bits(abits[:, :, k0:k1, None], bbits[:, None, k0:k1, :], table, m)
        prod = prod.view(torch.float32)
        for kk in range(k1 - k0):
            out += prod[:, :, kk, :]
    return out
