"""The integer LUT-GEMM ops: reference vs brute force, seed gradient formula, opcheck, gradcheck."""

import itertools

import pytest
import torch

import appmult_fx as amx
from appmult_fx.ops import reference
from appmult_fx.ops.lut_gemm import approx_bmm, lut_bmm, lut_bmm_grad_a, lut_bmm_grad_w

SEED_LUT = "appmults/resub_als/Mult_7_7_MED_63.6771_size_178_depth_23_lutfp+bp_avg_8_8.txt"


def _brute(a, w, table):
    """Triple loop over plain Python lists: the simplest possible statement of the product."""
    a, w, t = a.tolist(), w.tolist(), table.tolist()
    return torch.tensor(
        [
            [
                [
                    sum(t[a[b][i][kk]][w[b][kk][j]] for kk in range(len(w[b])))
                    for j in range(len(w[b][0]))
                ]
                for i in range(len(a[b]))
            ]
            for b in range(len(a))
        ],
        dtype=torch.int64,
    )


def _brute_grads(g, a, w, ga, gw):
    bsz, m, k = a.shape
    n = w.shape[2]
    da = torch.zeros(bsz, m, k, dtype=torch.float64)
    dw = torch.zeros(bsz, k, n, dtype=torch.float64)
    a_, w_, g_, ga_, gw_ = a.tolist(), w.tolist(), g.tolist(), ga.tolist(), gw.tolist()
    for b, i, kk, j in itertools.product(range(bsz), range(m), range(k), range(n)):
        da[b, i, kk] += g_[b][i][j] * ga_[a_[b][i][kk]][w_[b][kk][j]]
        dw[b, kk, j] += g_[b][i][j] * gw_[a_[b][i][kk]][w_[b][kk][j]]
    return da, dw


def _random_case(bits, shape=(2, 5, 7, 3)):
    bsz, m, k, n = shape
    hi = 1 << bits
    return (
        torch.randint(0, hi, (bsz, m, k), dtype=torch.uint8),
        torch.randint(0, hi, (bsz, k, n), dtype=torch.uint8),
    )


@pytest.fixture(scope="module")
def seed_mult(shared):
    return amx.load_multiplier(shared / SEED_LUT)


def test_reference_matches_brute_force_with_seed_lut(seed_mult) -> None:
    assert seed_mult.table[0, 0] != 0  # the seed LUT maps (0, 0) to 88
    for shape in [(1, 1, 1, 1), (2, 5, 7, 3), (1, 4, 27, 2), (3, 2, 13, 5)]:
        a, w = _random_case(7, shape)
        expect = _brute(a, w, seed_mult.table)
        assert torch.equal(reference.lut_bmm(a, w, seed_mult.table).long(), expect)
        assert torch.equal(lut_bmm(a, w, seed_mult.table).long(), expect)


def test_reference_never_materialises_mkn(monkeypatch) -> None:
    monkeypatch.setattr(reference, "_CHUNK_ELEMENTS", 64)
    table = torch.randint(-1000, 1000, (16, 16), dtype=torch.int32)
    a, w = _random_case(4, (2, 9, 31, 6))
    assert torch.equal(reference.lut_bmm(a, w, table).long(), _brute(a, w, table))


def test_gradient_products_equal_the_seed_formula(seed_mult) -> None:
    a, w = _random_case(7, (2, 4, 6, 3))
    g = torch.randn(2, 4, 3)
    da, dw = _brute_grads(g, a, w, seed_mult.grad_a, seed_mult.grad_b)
    torch.testing.assert_close(
        lut_bmm_grad_a(g, a, w, seed_mult.grad_a).double(), da, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        lut_bmm_grad_w(g, a, w, seed_mult.grad_b).double(), dw, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        reference.lut_bmm_grad_a(g, a, w, seed_mult.grad_a).double(), da, rtol=1e-5, atol=1e-5
    )


def test_approx_bmm_backward_uses_gradient_luts(seed_mult) -> None:
    qa = torch.randint(0, 128, (1, 4, 6)).float().requires_grad_()
    qb = torch.randint(0, 128, (1, 6, 3)).float().requires_grad_()
    out = approx_bmm(qa, qb, seed_mult.table, seed_mult.grad_a, seed_mult.grad_b)
    assert torch.equal(out.long(), _brute(qa.detach().byte(), qb.detach().byte(), seed_mult.table))
    g = torch.randn_like(out)
    out.backward(g)
    da, dw = _brute_grads(
        g, qa.detach().byte(), qb.detach().byte(), seed_mult.grad_a, seed_mult.grad_b
    )
    torch.testing.assert_close(qa.grad.double(), da, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(qb.grad.double(), dw, rtol=1e-5, atol=1e-5)


def test_ste_backward_is_exact_product_gradient() -> None:
    table = amx.multiplier("mul6s_exact").table
    qa = torch.randint(-32, 32, (2, 3, 5)).float().requires_grad_()
    qb = torch.randint(-32, 32, (2, 5, 4)).float().requires_grad_()
    out = approx_bmm(qa, qb, table, None, None)
    assert torch.equal(out, torch.bmm(qa.detach(), qb.detach()))
    out.sum().backward()
    torch.testing.assert_close(qa.grad, torch.ones(2, 3, 4) @ qb.detach().transpose(1, 2))


@pytest.mark.parametrize("mode", ["lut", "ste"])
@pytest.mark.parametrize("name", ["mul6u_exact", "mul5s_exact"])
def test_gradcheck_in_the_integer_domain(mode: str, name: str) -> None:
    """For an exact multiplier the product is bilinear in the codes, so a central difference
    with step 1 (an exact integer step) is the true derivative: gradcheck with eps=1."""
    m = amx.multiplier(name)
    lo, hi = m.operand_range
    qa = torch.randint(lo + 1, hi, (2, 3, 4)).float().requires_grad_()
    qb = torch.randint(lo + 1, hi, (2, 4, 2)).float().requires_grad_()
    grads = (m.grad_a, m.grad_b) if mode == "lut" else (None, None)
    fn = lambda x, y: approx_bmm(x, y, m.table, *grads)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (qa, qb), eps=1.0, atol=1e-3, rtol=1e-4, nondet_tol=0.0)


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_opcheck_every_op(bits: int) -> None:
    n = 1 << bits
    table = torch.randint(-3000, 3000, (n, n), dtype=torch.int32)
    ga, gw = torch.randn(n, n), torch.randn(n, n)
    a, w = _random_case(bits, (2, 5, 7, 3))
    g = torch.randn(2, 5, 3)
    torch.library.opcheck(lut_bmm, (a, w, table))
    torch.library.opcheck(lut_bmm_grad_a, (g, a, w, ga))
    torch.library.opcheck(lut_bmm_grad_w, (g, a, w, gw))
    qa = a.float().requires_grad_()
    qb = w.float().requires_grad_()
    torch.library.opcheck(approx_bmm, (qa, qb, table, ga, gw))
    torch.library.opcheck(approx_bmm, (qa, qb, table, None, None))


def test_op_input_errors_are_clear() -> None:
    table = torch.zeros(16, 16, dtype=torch.int32)
    a, w = _random_case(4)
    with pytest.raises(RuntimeError, match="uint8"):
        lut_bmm(a.long(), w, table)
    with pytest.raises(RuntimeError, match="inner dimensions"):
        lut_bmm(a, w[:, :3], table)
    with pytest.raises(RuntimeError, match="2\\*\\*bits"):
        lut_bmm(a, w, torch.zeros(16, 12, dtype=torch.int32))  # 12 columns: not 2**bits
    with pytest.raises(RuntimeError, match="2\\*\\*bits"):
        lut_bmm(a, w, torch.zeros(16, 16, 1, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="together"):
        approx_bmm(a.float(), w.float(), table, torch.zeros(16, 16), None)
