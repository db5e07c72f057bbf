"""Pure-PyTorch reference LUT-GEMM products: the oracle every kernel is tested against.

Shapes (batched, ``B`` independent GEMMs; indices are ``uint8`` table indices):
``a [B, M, K]``, ``w [B, K, N]``, ``table/ga/gw [2**bits_a, 2**bits_b]`` (rows: ``a``,
columns: ``w``).

* forward ``Y[b,m,n]  = SUM_k T [a[b,m,k], w[b,k,n]]``   (int64 accumulation, returned as int32
  like the kernels: exact when ``max|T| x K`` fits int32, which the op layer's ``lut_sum``
  guarantees by splitting ``K``; beyond it the int32 result wraps modulo 2**32 exactly as the
  kernels do)
* ``dA[b,m,k] = SUM_n G[b,m,n] * GA[a[b,m,k], w[b,k,n]]``  (float32)
* ``dW[b,k,n] = SUM_m G[b,m,n] * GW[a[b,m,k], w[b,k,n]]``  (float32)

Work is chunked over K so no ``M x K x N`` tensor is ever materialised.
"""

from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 1 << 22  # largest gathered block (elements) held at once


def _k_chunk(b: int, m: int, k: int, n: int) -> int:
    return max(1, min(k, _CHUNK_ELEMENTS // max(1, b * m * n)))


def _gather(
    table: torch.Tensor, a: torch.Tensor, w: torch.Tensor, k0: int, k1: int
) -> torch.Tensor:
    """``table[a[:, :, k0:k1, None], w[:, None, k0:k1, :]]`` as a [B, M, kc, N] tensor."""
    cols = table.shape[1]
    idx = a[:, :, k0:k1, None].to(torch.int64) * cols + w[:, None, k0:k1, :].to(torch.int64)
    return table.reshape(-1)[idx]


def lut_bmm(a: torch.Tensor, w: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Forward LUT-GEMM: int64 accumulation, returned as int32 (the kernels' twin: exact within
    the int32 bound the op layer keeps, modulo 2**32 beyond)."""
    bsz, m, k = a.shape
    n = w.shape[2]
    out = torch.zeros(bsz, m, n, dtype=torch.int64, device=a.device)
    step = _k_chunk(bsz, m, k, n)
    for k0 in range(0, k, step):
        out += _gather(table, a, w, k0, min(k, k0 + step)).sum(dim=2, dtype=torch.int64)
    return out.to(torch.int32)


RUN = 16  # k per run of dA a dead flag leaves 0


def zero_dead_runs(da: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """``da [B, M, K]`` with the runs of :data:`RUN` ``k`` (from ``k = 0``) that ``dead``
    ``[B, M, ceil(K / RUN)]`` flags set to 0, in place."""
    entries = dead.to(torch.bool).repeat_interleave(RUN, dim=2)[:, :, : da.shape[2]]
    return da.masked_fill_(entries, 0.0)


def lut_bmm_grad_a(
    g: torch.Tensor,
    a: torch.Tensor,
    w: torch.Tensor,
    ga: torch.Tensor,
    dead: torch.Tensor | None = None,
) -> torch.Tensor:
    """Activation-gradient product ``dA = SUM_n G * GA[a, w]`` (float32), 0 in the runs of
    :data:`RUN` ``k`` that ``dead`` flags (:func:`zero_dead_runs`)."""
    bsz, m, k = a.shape
    n = w.shape[2]
    out = torch.empty(bsz, m, k, dtype=torch.float32, device=a.device)
    step = _k_chunk(bsz, m, k, n)
    g = g.to(torch.float32)
    for k0 in range(0, k, step):
        k1 = min(k, k0 + step)
        out[:, :, k0:k1] = (_gather(ga, a, w, k0, k1) * g[:, :, None, :]).sum(dim=3)
    return out if dead is None else zero_dead_runs(out, dead)


def lut_bmm_grad_w(
    g: torch.Tensor, a: torch.Tensor, w: torch.Tensor, gw: torch.Tensor
) -> torch.Tensor:
    """Weight-gradient product ``dW = SUM_m G * GW[a, w]`` (float32)."""
    bsz, m, k = a.shape
    n = w.shape[2]
    out = torch.empty(bsz, k, n, dtype=torch.float32, device=a.device)
    step = _k_chunk(bsz, m, k, n)
    g = g.to(torch.float32)
    for k0 in range(0, k, step):
        k1 = min(k, k0 + step)
        out[:, k0:k1, :] = (_gather(gw, a, w, k0, k1) * g[:, :, None, :]).sum(dim=1)
    return out
