"""CUDA LUT-GEMM kernels against the reference (skipped without a GPU), and opcheck on CUDA."""

from __future__ import annotations

import pytest
import torch

from appmult_fx.ops import kernels

from .test_kernels_cpu import (
    check_backend,
    check_bit_limits,
    check_wraparound,
    make_operands,
    make_table,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def cuda_backend() -> kernels.CUDABackend:
    backend = kernels.backend_for(torch.device("cuda"))
    assert isinstance(backend, kernels.CUDABackend)
    return backend


def test_cuda_matches_reference(cuda_backend) -> None:
    check_backend(cuda_backend, "cuda")


def test_cuda_forward_wraps_like_reference(cuda_backend) -> None:
    check_wraparound(cuda_backend, "cuda")


def test_cuda_split_reductions(cuda_backend) -> None:
    """Long reductions with few output tiles take the split (atomicAdd) path."""
    from appmult_fx.ops import reference

    from .test_kernels_cpu import assert_float_product_close

    gen = torch.Generator().manual_seed(5)
    for bits in (7, 8):
        table = make_table(bits, False, gen)
        gw = torch.randn(1 << bits, 1 << bits, generator=gen)
        a, w, g = make_operands((1, 3000, 1000, 9), bits, gen)
        y = cuda_backend.lut_bmm(a.cuda(), w.cuda(), table.cuda()).cpu()
        assert torch.equal(y, reference.lut_bmm(a, w, table))
        dw = cuda_backend.lut_bmm_grad_w(g.cuda(), a.cuda(), w.cuda(), gw.cuda()).cpu()
        assert_float_product_close(dw, reference.lut_bmm_grad_w, g, a, w, gw)


def test_cuda_kernel_checks_the_one_bit_width_rule(cuda_backend) -> None:
    check_bit_limits(kernels.cuda_extension(), cuda_backend, "cuda")


def test_cuda_opcheck() -> None:
    gen = torch.Generator().manual_seed(6)
    table = make_table(6, True, gen).cuda()
    ga, gw = torch.randn(64, 64, device="cuda"), torch.randn(64, 64, device="cuda")
    a, w, g = (t.cuda() for t in make_operands((2, 9, 27, 11), 6, gen))
    ops = torch.ops.appmult
    torch.library.opcheck(ops.lut_bmm, (a, w, table))
    torch.library.opcheck(ops.lut_bmm_grad_a, (g, a, w, ga))
    torch.library.opcheck(ops.lut_bmm_grad_w, (g, a, w, gw))


def test_cuda_rectangular_tables(cuda_backend) -> None:
    """(2**bits_a, 2**bits_b) tables, signed and unsigned, 16-bit and wide forward tables, ragged
    shapes, and a split reduction."""
    from .test_kernels_rectangular import WIDTHS, check_rectangular, rectangular_cases

    shapes = [(1, 1, 1, 1), (2, 13, 31, 33), (1, 300, 70, 20), (1, 9, 3000, 7)]
    check_rectangular(cuda_backend, rectangular_cases(WIDTHS, shapes), "cuda")


def test_cuda_opcheck_rectangular() -> None:
    from .test_kernels_rectangular import rect_table

    gen = torch.Generator().manual_seed(9)
    table = rect_table(8, 4, True, False, gen).cuda()
    ga, gw = torch.randn(256, 16, device="cuda"), torch.randn(256, 16, device="cuda")
    a, w, g = (t.cuda() for t in make_operands((2, 9, 27, 11), 8, gen, 4))
    ops = torch.ops.appmult
    torch.library.opcheck(ops.lut_bmm, (a, w, table))
    torch.library.opcheck(ops.lut_bmm_grad_a, (g, a, w, ga))
    torch.library.opcheck(ops.lut_bmm_grad_w, (g, a, w, gw))
