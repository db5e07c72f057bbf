"""bench/lut_gemm.py: ``--zeros`` outside [0, 1) is refused before any timing; the float
products it compares each gradient kernel with are the GEMMs of that gradient."""

from __future__ import annotations

import pytest
import torch

from tests.bench_scripts import load_bench_script


def _module():
    return load_bench_script("lut_gemm")


@pytest.mark.parametrize("share", ["1", "1.5", "-0.1"])
def test_zero_share_outside_the_unit_interval_is_refused(share: str, capsys) -> None:
    assert _module().main(["--zeros", share]) == 2
    assert "--zeros must be in [0, 1)" in capsys.readouterr().err


def test_zero_share_is_parsed() -> None:
    args = _module().parse_args(["--zeros", "0.55", "--bits", "7x8"])
    assert args.zeros == 0.55 and args.bits == [(7, 8)]


def test_float_products_are_the_gradients_of_a_linear_layer() -> None:
    """``dA = G @ W^T`` and ``dW = A^T @ G``, checked against autograd of ``A @ W``."""
    torch.manual_seed(0)
    a = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, 3, dtype=torch.float64)
    (a @ w).backward(g)
    fns = _module().float_product_fns(a.detach(), w.detach(), g)
    assert torch.allclose(fns["fwd"](), a @ w)
    assert torch.allclose(fns["dA"](), a.grad)
    assert torch.allclose(fns["dW"](), w.grad)
