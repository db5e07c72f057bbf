"""FP LUT-GEMM ops: reference vs scalar oracle, bfloat16 parity, kernels, opcheck, backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import appmult_fx as amx
from appmult_fx.ops import fp_kernels, fp_reference
from appmult_fx.ops.dispatch import use_reference
from appmult_fx.ops.fp_gemm import fp_approx_bmm, fp_bmm
from tests.luts.fp_oracle import f2u, product, u2f

INF, NAN = float("inf"), float("nan")


def _operands(
    shape_a, shape_b, specials: bool = True, density: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.randn(shape_a) * 4, torch.randn(shape_b) * 4
    if specials:
        fill = torch.tensor([0.0, -0.0, INF, -INF, NAN, 1e-39, 3e38, 1e-30])
        for t in (a, b):
            flat = t.view(-1)
            idx = torch.randint(0, flat.numel(), (max(1, flat.numel() // density),))
            flat[idx] = fill[torch.randint(0, len(fill), idx.shape)]
    return a, b


def _oracle_bmm(a: torch.Tensor, b: torch.Tensor, mult) -> torch.Tensor:
    table, m = mult.mantissa_table.tolist(), mult.mantissa_bits
    out = torch.empty(a.shape[0], a.shape[1], b.shape[2])
    for bb in range(a.shape[0]):
        for i in range(a.shape[1]):
            for j in range(b.shape[2]):
                acc = np.float32(0.0)
                for k in range(a.shape[2]):
                    p = product(
                        f2u(float(a[bb, i, k])), f2u(float(b[bb, k, j])), table, m, mult.rounding
                    )
                    with np.errstate(invalid="ignore"):  # inf + -inf = NaN is expected here
                        acc = np.float32(acc + np.float32(u2f(p)))
                out[bb, i, j] = float(acc)
    return out


def _same_bits(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Bit-identical, except that a NaN's sign and payload are unspecified (IEEE-754)."""
    nan = torch.isnan(x)
    if not torch.equal(nan, torch.isnan(y)):
        return False
    xb, yb = x.contiguous().view(torch.int32), y.contiguous().view(torch.int32)
    return torch.equal(xb[~nan], yb[~nan])


@pytest.mark.parametrize("name", ["fp_mbm7", "fp_mit3", "fp_trunc7"])
def test_reference_op_equals_scalar_oracle(name: str, reference_only) -> None:
    mult = amx.multiplier(name)
    a, b = _operands((2, 3, 9), (2, 9, 4))
    got = fp_bmm(a, b, mult.mantissa_table, "truncate")
    assert _same_bits(got, _oracle_bmm(a, b, mult))
    nearest = mult.with_rounding("nearest")
    assert _same_bits(fp_bmm(a, b, mult.mantissa_table, "nearest"), _oracle_bmm(a, b, nearest))


def _bf16_truncate(x: torch.Tensor) -> torch.Tensor:
    return (x.view(torch.int32) & -(1 << 16)).view(torch.float32)


def test_truncated_bfloat16_table_equals_torch_in_the_same_order(reference_only) -> None:
    a, b = _operands((3, 17, 40), (3, 40, 11), specials=False)
    got = fp_bmm(a, b, amx.multiplier("fp_trunc7").mantissa_table, "truncate")
    prods = _bf16_truncate(_bf16_truncate(a)[:, :, :, None] * _bf16_truncate(b)[:, None, :, :])
    want = torch.zeros(3, 17, 11)
    for k in range(40):  # FP32 accumulation, sequential over k
        want = want + prods[:, :, k, :]
    assert _same_bits(got, want)
    # and within float32 rounding of torch's own (differently ordered) sum of the same products
    assert torch.allclose(
        got, prods.sum(dim=2), rtol=0, atol=float(prods.abs().sum(2).max()) * 2**-22
    )


@pytest.mark.parametrize(
    ("name", "rounding"),
    [
        ("fp_mbm7", "truncate"),
        ("fp_mit1", "nearest"),
        ("fp_trunc11", "nearest"),
        ("fp_mit5", "truncate"),
    ],
)
def test_cpu_kernel_is_bit_identical_to_reference(name: str, rounding: str) -> None:
    mult = amx.multiplier(name)
    t, m, ext = mult.mantissa_table, mult.mantissa_bits, fp_kernels.cpu_extension()
    a, b = _operands((3, 33, 70), (3, 70, 21), density=300)
    assert _same_bits(ext.fp_bmm(a, b, t, m, rounding), fp_reference.fp_bmm(a, b, t, m, rounding))
    # rows without specials take the kernel's fast path; ReLU zeros, one huge and one tiny row
    a2, b2 = torch.randn(3, 33, 70).relu(), torch.randn(3, 70, 21)
    a2[0, 3, :5] = 3.0e38  # overflows to inf
    a2[1, 5] = 1.0e-38  # products flush to zero
    a2[2, 7, 0] = -0.0
    want2 = fp_reference.fp_bmm(a2, b2, t, m, rounding)
    assert _same_bits(ext.fp_bmm(a2, b2, t, m, rounding), want2)
    assert not torch.isfinite(want2[0, 3]).all() and (want2[1, 5] == 0).any()
    empty = ext.fp_bmm(a[:, :, :0], b[:, :0], t, m, rounding)
    assert torch.equal(empty, torch.zeros(3, 33, 21))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_kernel_is_bit_identical_to_reference() -> None:
    mult = amx.multiplier("fp_mbm7")
    a, b = _operands((2, 70, 130), (2, 130, 45), density=500)
    want = fp_reference.fp_bmm(a, b, mult.mantissa_table, mult.mantissa_bits, "truncate")
    got = fp_bmm(a.cuda(), b.cuda(), mult.mantissa_table.cuda(), "truncate")
    assert _same_bits(got.cpu(), want)


def test_fp_bmm_dispatches_to_the_registered_cpu_kernel(monkeypatch) -> None:
    """Kernels active: the CPU FP kernel serves ``fp_bmm`` (registered with torch.library);
    ``use_reference(True)``: the reference body does, with the same bits."""
    calls = []
    real = fp_kernels.backend_for
    monkeypatch.setattr(fp_kernels, "backend_for", lambda d: calls.append(d.type) or real(d))
    table = amx.multiplier("fp_mbm5").mantissa_table
    a, b = _operands((2, 4, 9), (2, 9, 3))
    previous = use_reference(False)
    try:
        kernel = fp_bmm(a, b, table, "nearest")
        assert calls == ["cpu"]
        use_reference(True)
        assert _same_bits(fp_bmm(a, b, table, "nearest"), kernel) and calls == ["cpu"]
    finally:
        use_reference(previous)


def test_opcheck() -> None:
    table = amx.multiplier("fp_mbm5").mantissa_table
    a, b = torch.randn(2, 5, 7), torch.randn(2, 7, 3)
    torch.library.opcheck(fp_bmm, (a, b, table, "truncate"))
    for backward in ("approximate", "exact"):
        args = (a.clone().requires_grad_(), b.clone().requires_grad_(), table, "nearest", backward)
        torch.library.opcheck(fp_approx_bmm, args)


def _brute_bmm(x: torch.Tensor, y: torch.Tensor, mult) -> torch.Tensor:
    """Sequential sum over the inner index of elementwise LUT products."""
    acc = torch.zeros(x.shape[0], x.shape[1], y.shape[2])
    for k in range(x.shape[2]):
        acc = acc + mult.product(x[:, :, k, None], y[:, None, k, :])
    return acc


@pytest.mark.parametrize("rounding", ["truncate", "nearest"])
def test_approximate_backward_equals_brute_force_gradient_gemms(rounding: str) -> None:
    mult = amx.multiplier("fp_mit7").with_rounding(rounding)
    a = torch.randn(2, 6, 9, requires_grad=True)
    b = torch.randn(2, 9, 5, requires_grad=True)
    g = torch.randn(2, 6, 5)
    out = fp_approx_bmm(a, b, mult.mantissa_table, rounding, "approximate")
    assert _same_bits(out, _brute_bmm(a.detach(), b.detach(), mult))
    out.backward(g)
    assert _same_bits(a.grad, _brute_bmm(g, b.detach().transpose(1, 2), mult))
    assert _same_bits(b.grad, _brute_bmm(a.detach().transpose(1, 2), g, mult))
    assert not torch.equal(a.grad, torch.bmm(g, b.detach().transpose(1, 2)))


def test_exact_backward_equals_torch_bmm_gradients() -> None:
    table = amx.multiplier("fp_mbm7").mantissa_table
    a = torch.randn(3, 4, 6, requires_grad=True)
    b = torch.randn(3, 6, 2, requires_grad=True)
    g = torch.randn(3, 4, 2)
    fp_approx_bmm(a, b, table, "truncate", "exact").backward(g)
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    torch.bmm(a2, b2).backward(g)
    assert torch.equal(a.grad, a2.grad) and torch.equal(b.grad, b2.grad)


def test_bad_inputs_say_what_was_expected() -> None:
    table = amx.multiplier("fp_mbm7").mantissa_table
    a, b = torch.randn(1, 2, 3), torch.randn(1, 3, 4)
    with pytest.raises(RuntimeError, match="float32"):
        fp_bmm(a.double(), b, table, "truncate")
    with pytest.raises(RuntimeError, match="inner dimensions"):
        fp_bmm(a, b[:, :2], table, "truncate")
    with pytest.raises(RuntimeError, match="mantissa table of shape"):
        fp_bmm(a, b, table[:, :64], "truncate")
    with pytest.raises(RuntimeError, match="int32"):
        fp_bmm(a, b, table.long(), "truncate")
    with pytest.raises(RuntimeError, match="rounding"):
        fp_bmm(a, b, table, "up")
    with pytest.raises(RuntimeError, match="backward"):
        fp_approx_bmm(a, b, table, "truncate", "ste")
