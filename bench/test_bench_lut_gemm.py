"""pytest-benchmark suites of the LUT-GEMM kernels (run: pytest bench/ --benchmark-enable).

Each kernel product is benchmarked next to fp32 ``torch.mm`` on the same shape, so ratios can be
read from one run (``--benchmark-group-by=param:shape``).
"""

from __future__ import annotations

import pytest
import torch
from appmult_fx.luts.indexing import operand_values
from lut_gemm import RESNET18_CIFAR, VIT_B, product_fns

from appmult_fx.ops import kernels

SHAPES = {name: (m, k, n) for name, m, k, n in RESNET18_CIFAR + VIT_B}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def operands(shape: str, bits: int, device: str):
    m, k, n = SHAPES[shape]
    v = operand_values(bits, signed=False)
    table = torch.outer(v, v).to(torch.int32).to(device)
    gtab = torch.randn(1 << bits, 1 << bits, device=device)
    a = torch.randint(0, 1 << bits, (1, m, k), dtype=torch.uint8, device=device)
    w = torch.randint(0, 1 << bits, (1, k, n), dtype=torch.uint8, device=device)
    g = torch.randn(1, m, n, device=device)
    return a, w, g, table, gtab


def synced(fn, device: str):
    if device == "cuda":
        return lambda: (fn(), torch.cuda.synchronize())
    return fn


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bits", [7, 8])
@pytest.mark.parametrize("product", ["fwd", "dA", "dW"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_lut_gemm_kernel(benchmark, shape: str, product: str, bits: int, device: str) -> None:
    a, w, g, table, gtab = operands(shape, bits, device)
    fn = product_fns(kernels.backend_for(torch.device(device)), a, w, g, table, gtab)[product]
    m, k, n = SHAPES[shape]
    benchmark.extra_info.update({"M": m, "K": k, "N": n, "macs": m * k * n})
    out = benchmark(synced(fn, device))
    assert out is not None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_torch_mm_baseline(benchmark, shape: str, device: str) -> None:
    m, k, n = SHAPES[shape]
    af, wf = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    benchmark.extra_info.update({"M": m, "K": k, "N": n, "macs": m * k * n})
    out = benchmark(synced(lambda: torch.mm(af, wf), device))
    assert out is not None
