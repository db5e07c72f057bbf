"""Matmul-like ops (matmul, @, bmm, baddbmm, einsum, N-D F.linear) through LUT-GEMM."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from appmult_fx.luts.multiplier import Multiplier
from torch import nn

import appmult_fx as amx
from appmult_fx.ops.int_layers import einsum_as_bmm, lut_einsum, lut_matmul
from appmult_fx.ops.quantizers import ActivationQuantizer

from .fake_quant import fake_quant_forward

EXACT = amx.multiplier("mul8u_exact")


def _codes(*shape: int) -> torch.Tensor:
    return torch.randint(0, 256, shape).float()


@pytest.mark.parametrize(
    ("sa", "sb"),
    [
        ((5,), (5,)),
        ((3, 5), (5,)),
        ((5,), (5, 4)),
        ((2, 3, 5), (5, 4)),
        ((2, 1, 3, 5), (4, 5, 6)),
        ((3, 5), (2, 5, 4)),
        ((2, 3, 5), (2, 5, 4)),
    ],
)
def test_lut_matmul_broadcasts_like_torch(sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    a, b, za, zb = _codes(*sa), _codes(*sb), torch.tensor(-7.0), torch.tensor(-100.0)
    got = lut_matmul(a, za, b, zb, EXACT.table, None, None)
    want = torch.matmul((a + za).double(), (b + zb).double())
    assert got.shape == want.shape
    assert torch.equal(got, want)


def test_lut_matmul_left_operand_indexes_rows() -> None:
    rows = (
        torch.arange(256, dtype=torch.int32)[:, None].expand(256, 256).contiguous()
    )  # T[a, b] = a
    a, b = _codes(2, 3, 4), _codes(2, 4, 5)
    got = lut_matmul(a, torch.tensor(0.0), b, torch.tensor(0.0), rows, None, None)
    assert torch.equal(got, a.sum(-1, keepdim=True).double().expand(2, 3, 5))


@pytest.mark.parametrize(
    ("eq", "sa", "sb"),
    [
        ("bhid,bhjd->bhij", (2, 3, 4, 5), (2, 3, 6, 5)),
        ("bij,bjk->bik", (2, 3, 4), (2, 4, 5)),
        ("ik,jk->ji", (3, 4), (5, 4)),
        ("bnk,kc->bcn", (2, 3, 4), (4, 5)),
        ("bij,jk->bik", (1, 3, 4), (4, 2)),
    ],
)
def test_lut_einsum_matches_einsum(eq: str, sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    a, b, za, zb = _codes(*sa), _codes(*sb), torch.tensor(-3.0), torch.tensor(-50.0)
    got = lut_einsum(eq, a, za, b, zb, EXACT.table, None, None)
    assert torch.equal(got, torch.einsum(eq, (a + za).double(), (b + zb).double()))


@pytest.mark.parametrize(
    "eq", ["ii->i", "ij,jk", "...ij,...jk->...ik", "ij,jk,kl->il", "ij,ik->i", "iij,jk->ik"]
)
def test_einsum_that_is_no_bmm_is_refused(eq: str) -> None:
    assert einsum_as_bmm(eq) is None


class Products(nn.Module):
    """Every matmul spelling, on activations only."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        q = self.proj(x)  # 3-D input into nn.Linear
        a = q @ x.transpose(-1, -2)  # operator.matmul  [2, 5, 5]
        b = torch.bmm(a, y)  # [2, 5, 8]
        c = torch.baddbmm(b, a, y, beta=0.5, alpha=2.0)
        d = torch.einsum("bij,bkj->bik", c, x)  # [2, 5, 5]
        e = d.matmul(y)  # Tensor.matmul, [2, 5, 8]
        f = torch.matmul(e, q[0].t())  # batch broadcast against a 2-D operand
        g = F.linear(f, x[0].t())  # F.linear whose weight is an activation, 3-D input
        return g + torch.einsum("ii->i", a[0]).sum()  # a trace: not a matmul, left alone


def _convert(model: nn.Module, spec: amx.Spec, *inputs: torch.Tensor, gradient: str = "ste"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = amx.convert(model, spec, example_inputs=inputs, gradient=gradient)
        amx.calibrate(gm, [inputs], progress=False)
    return gm.eval()


def test_all_matmul_spellings_are_layers_with_two_observers() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    gm = _convert(Products(), amx.Spec().set_global(EXACT), x, y)
    recs = amx.layers(gm)
    assert [(r.name, r.op) for r in recs] == [
        ("proj", "linear"),
        ("matmul", "matmul"),
        ("bmm", "bmm"),
        ("baddbmm", "baddbmm"),
        ("einsum", "einsum"),
        ("matmul_1", "matmul"),
        ("matmul_2", "matmul"),
        ("linear", "linear"),
    ]
    assert [r.macs for r in recs] == [
        2 * 5 * 8 * 8,
        2 * 5 * 5 * 8,
        2 * 5 * 8 * 5,
        2 * 5 * 8 * 5,
        2 * 5 * 5 * 8,
        2 * 5 * 8 * 5,
        2 * 5 * 5 * 8,
        2 * 5 * 5 * 8,
    ]
    observers = {n: m for n, m in gm.named_modules() if isinstance(m, ActivationQuantizer)}
    for site in ("matmul", "bmm", "baddbmm", "einsum", "matmul_1", "matmul_2"):
        a, b = observers[f"{site}_a_quant"], observers[f"{site}_b_quant"]
        assert bool(a.initialized) and bool(b.initialized)
        assert (a.min_val, a.max_val) != (b.min_val, b.max_val)


def test_exact_multiplier_equals_fake_quantization_and_backward_flows() -> None:
    torch.manual_seed(1)
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    model = Products()
    gm = _convert(model, amx.Spec().set_global(EXACT), x, y, gradient="lut")
    out = gm(x, y)
    ref = fake_quant_forward(gm, x, y)
    assert torch.allclose(out.double(), ref.double(), rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert F.cosine_similarity(out.flatten(), model(x, y).flatten(), dim=0) > 0.99  # and near float
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gm.parameters())


def test_approximate_multiplier_changes_matmul_result() -> None:
    torch.manual_seed(2)
    table = EXACT.table.clone()
    table[128:, 128:] += 200  # large codes multiply wrongly
    approx = Multiplier("mul8u_test_approx", 8, False, table)
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    spec = amx.Spec().set_global(None).set_object_type(torch.matmul, approx)
    gm = _convert(Products(), spec, x, y)
    assert [r.name for r in amx.layers(gm) if r.approximate] == ["matmul", "matmul_1", "matmul_2"]
    assert [r.multiplier for r in amx.layers(gm) if not r.approximate] == [None] * 5
    out, ref = gm(x, y), fake_quant_forward(gm, x, y)
    assert not torch.allclose(out.double(), ref.double(), rtol=1e-3)


def test_matmul_spec_by_name_and_float_record() -> None:
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    spec = (
        amx.Spec()
        .set_global(EXACT)
        .set_module_name("bmm", None)
        .set_object_type("torch.baddbmm", None)
    )
    gm = _convert(Products(), spec, x, y)
    floats = [r for r in amx.layers(gm) if not r.approximate]
    assert [(r.name, r.macs) for r in floats] == [("bmm", 400), ("baddbmm", 400)]
    assert "bmm" in {n.name for n in gm.graph.nodes}  # left as torch.bmm


@pytest.mark.parametrize("name", ["mul8x4u_exact", "mul8x2s_exact", "mul3x6u_exact"])
def test_rectangular_exact_matmul_equals_fake_quantization(name: str) -> None:
    """Each operand of a product of two activations follows its own side: the left one is
    quantized at ``bits_a`` (table rows), the right one at ``bits_b`` (columns)."""
    torch.manual_seed(3)
    mult = amx.multiplier(name)
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    gm = _convert(Products(), amx.Spec().set_global(mult), x, y, gradient="lut")
    observers = {n: m for n, m in gm.named_modules() if isinstance(m, ActivationQuantizer)}
    for site in ("matmul", "bmm", "baddbmm", "einsum", "matmul_1", "matmul_2"):
        assert observers[f"{site}_a_quant"].bits == mult.bits_a
        assert observers[f"{site}_b_quant"].bits == mult.bits_b
    assert observers["proj_input_quant"].bits == mult.bits_a
    assert {(r.bits_a, r.bits_b) for r in amx.layers(gm)} == {(mult.bits_a, mult.bits_b)}
    out, ref = gm(x, y), fake_quant_forward(gm, x, y)
    assert torch.allclose(out.double(), ref.double(), rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gm.parameters())


class _ParameterLeft(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.w, x)  # [6, 8] @ [2, 8, 5]


def test_parameter_on_the_row_side_of_a_rectangular_matmul_warns() -> None:
    x = torch.randn(2, 8, 5)
    with pytest.warns(UserWarning, match=r"parameter 'w' is the left operand.*8x4.*8 bits"):
        amx.convert(_ParameterLeft(), amx.Spec().set_global("mul8x4u_exact"), example_inputs=x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # square multipliers: no side to choose
        amx.convert(_ParameterLeft(), amx.Spec().set_global("mul8u_exact"), example_inputs=x)
