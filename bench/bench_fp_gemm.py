"""FP LUT-GEMM timings: compiled CPU kernel and pure-torch reference vs ``torch.bmm`` (baseline).

Run: ``pytest bench/bench_fp_gemm.py --benchmark-enable`` and report each mean as a ratio to
``test_baseline_torch_bmm`` from the same run. Shape: LeNet's second conv for a batch of 64
(``[1, 4096, 800] @ [1, 800, 32]``), fp_mbm7, ReLU activations.
"""

from __future__ import annotations

import os

import pytest
import torch

import appmult_fx as amx
from appmult_fx.ops import fp_kernels, fp_reference

SHAPE_A, SHAPE_B = (1, 4096, 800), (1, 800, 32)


@pytest.fixture(scope="module")
def operands() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    table = amx.multiplier("fp_mbm7").mantissa_table
    return torch.randn(SHAPE_A).relu(), torch.randn(SHAPE_B), table


def test_baseline_torch_bmm(benchmark, operands) -> None:
    a, b, _ = operands
    assert benchmark(torch.bmm, a, b).shape == (1, 4096, 32)


def test_fp_bmm_cpu_kernel(benchmark, operands) -> None:
    a, b, table = operands
    ext = fp_kernels.cpu_extension()
    assert benchmark(ext.fp_bmm, a, b, table, 7, "truncate").shape == (1, 4096, 32)


@pytest.mark.skipif(os.environ.get("APPMULT_FX_BENCH_REFERENCE") != "1", reason="slow; opt in")
def test_fp_bmm_reference(benchmark, operands) -> None:
    a, b, table = operands
    assert benchmark(fp_reference.fp_bmm, a, b, table, 7, "truncate").shape == (1, 4096, 32)
