"""Every multiply is converted or reported: ``mm``/``mv``/``dot``/``addmm``, implicit-output and
scalar einsums, ``1-D @ 1-D`` go through the LUT; bilinear and other einsums stay float with a
warning and a float record. References are hand-written from the observers' ranges."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import appmult_fx as amx

Product = Callable[[Tensor, Tensor, Tensor], Tensor]


class _Two(nn.Module):
    """``fn(a, b, bias)``: a product of two activations (``bias`` is a parameter)."""

    def __init__(self, fn: Product, n: int) -> None:
        super().__init__()
        self.fn = fn
        self.bias = nn.Parameter(torch.randn(n))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """The product."""
        return self.fn(a, b, self.bias)


def _codes(x: Tensor, lo: Tensor, hi: Tensor, bits: int, signed: bool) -> tuple[Tensor, ...]:
    """Codes, scale and zero point of ``x`` per the documented scheme (independent restatement)."""
    lo, hi = torch.clamp(lo.float(), max=0.0), torch.clamp(hi.float(), min=0.0)  # float32
    eps = torch.finfo(torch.float32).eps
    if signed:
        qmax = 2 ** (bits - 1) - 1
        scale = torch.clamp(torch.maximum(-lo, hi) / qmax, min=eps)
        return torch.clamp(torch.round(x / scale), -qmax - 1, qmax), scale, torch.tensor(0.0)
    qmax = 2**bits - 1
    scale = torch.clamp((hi - lo) / qmax, min=eps)
    zp = torch.round(lo / scale)
    return torch.clamp(torch.round(x / scale - zp), 0, qmax), scale, zp


def _convert(fn: Product, mult: str, a: Tensor, b: Tensor, examples: bool = True):  # noqa: ANN202
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _Two(fn, 3)
        gm = amx.convert(
            model, amx.Spec().set_global(mult), example_inputs=(a, b) if examples else None
        )
        amx.calibrate(gm, [(a, b)], progress=False)
    return model, gm.eval()


def _operand_codes(gm: torch.fx.GraphModule, a: Tensor, b: Tensor) -> tuple[Tensor, ...]:
    (record,) = amx.layers(gm)
    qa, qb = (gm.get_submodule(q) for q in record.parts.quantizers)
    mult = record.multiplier
    return (
        *_codes(a, qa.min_val, qa.max_val, mult.bits_a, mult.signed),
        *_codes(b, qb.min_val, qb.max_val, mult.bits_b, mult.signed),
    )


def _mm(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return torch.mm(a, b)


def _method_mm(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return a.mm(b)


def _addmm(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return torch.addmm(c, a, b)


def _addmm_scaled(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return c.addmm(a, b, beta=0.5, alpha=2.0)


def _einsum_implicit(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return torch.einsum("ij,jk", a, b)


def _mv(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return torch.mv(a, b[:, 0])


def _method_mv(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return a.mv(b[:, 0])


def _dot(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return a[0] @ b[:, 0]


def _torch_dot(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return torch.dot(a[0], b[:, 0])


def _einsum_dot(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return torch.einsum("i,i->", a[0], b[:, 0])


def _einsum_full(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return torch.einsum("ij,ji->", a[:3], b)


# spelling -> (the float64 product of real-valued operands, the exact-arithmetic epilogue)
SPELLINGS: dict[Product, Callable[[Tensor, Tensor], Tensor]] = {
    _mm: lambda a, b: a @ b,
    _method_mm: lambda a, b: a @ b,
    _addmm: lambda a, b: a @ b,
    _addmm_scaled: lambda a, b: a @ b,
    _einsum_implicit: lambda a, b: a @ b,
    _mv: lambda a, b: a @ b[:, 0],
    _method_mv: lambda a, b: a @ b[:, 0],
    _dot: lambda a, b: a[0] @ b[:, 0],
    _torch_dot: lambda a, b: a[0] @ b[:, 0],
    _einsum_dot: lambda a, b: a[0] @ b[:, 0],
    _einsum_full: lambda a, b: (a[:3] * b.T).sum(),
}


def _epilogue(fn: Product, y: Tensor, bias: Tensor) -> Tensor:
    """``beta * bias + alpha * y`` for the addmm spellings."""
    if fn is _addmm:
        return bias + y
    return 0.5 * bias + 2.0 * y if fn is _addmm_scaled else y


def _operands() -> tuple[Tensor, Tensor]:
    torch.manual_seed(1)
    return torch.randn(4, 5), torch.randn(5, 3)


@pytest.mark.parametrize("examples", [True, False])
@pytest.mark.parametrize("name", ["mul8u_exact", "mul8s_exact"])
@pytest.mark.parametrize("fn", list(SPELLINGS), ids=lambda f: f.__name__)
def test_exact_multiplier_equals_hand_fake_quantization(
    fn: Product, name: str, examples: bool
) -> None:
    a, b = _operands()
    model, gm = _convert(fn, name, a, b, examples)
    qa, sa, za, qb, sb, zb = _operand_codes(gm, a, b)
    real = SPELLINGS[fn]((qa + za).double(), (qb + zb).double())
    want = _epilogue(fn, (real * (sa.double() * sb.double())).float(), model.bias.detach())
    with torch.no_grad():
        got = gm(a, b)
    assert got.shape == fn(a, b, model.bias).shape
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["mul8u_trunc4", "mul8s_trunc4"])
@pytest.mark.parametrize("fn", [_mm, _addmm_scaled, _einsum_implicit, _mv, _dot, _einsum_full])
def test_approximate_multiplier_indexes_the_table(fn: Product, name: str) -> None:
    a, b = _operands()
    model, gm = _convert(fn, name, a, b)
    qa, sa, za, qb, sb, zb = _operand_codes(gm, a, b)
    table = amx.multiplier(name).table.long()
    ia, ib = qa.long() % 256, qb.long() % 256  # row/column index = code mod 2^b
    if fn is _einsum_full:  # SUM_ij AM(a_ij, b_ji) over the first three rows of a
        products = table[ia[:3], ib.T].double().sum()
        acc = products + zb * qa[:3].double().sum() + za * qb.double().sum() + 15 * za * zb
    else:
        products = table[ia[:, :, None], ib[None, :, :]].double().sum(1)  # [M, N]
        cross = zb * qa.double().sum(1, keepdim=True) + za * qb.double().sum(0) + 5 * za * zb
        acc = {_mv: lambda t: t[:, 0], _dot: lambda t: t[0, 0]}.get(fn, lambda t: t)(
            products + cross
        )
    want = _epilogue(fn, (acc * (sa.double() * sb.double())).float(), model.bias.detach())
    with torch.no_grad():
        assert torch.equal(gm(a, b), want)


class _Counted(nn.Module):
    """The converted spellings of a product FlopCounterMode counts."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 3))
        self.bias = nn.Parameter(torch.randn(3))

    def forward(self, x: Tensor) -> Tensor:
        """Sum of several spellings of ``x @ w``."""
        y = torch.mm(x, self.w) + x.mm(self.w) + torch.addmm(self.bias, x, self.w)
        y = y + self.bias.addmm(x, self.w, beta=0.5, alpha=2.0)
        return y + torch.einsum("ij,jk", x, self.w) + torch.einsum("bj,jk", x, self.w)


def test_spellings_are_lut_layers_whose_macs_match_the_flop_counter() -> None:
    x = torch.randn(4, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is left unconverted: no warning
        gm = amx.convert(_Counted(), amx.Spec().set_global("mul8u_exact"), example_inputs=x)
    records = amx.layers(gm)
    assert [(r.name, r.op, r.approximate) for r in records] == [
        ("mm", "matmul", True),
        ("mm_1", "matmul", True),
        ("addmm", "addmm", True),
        ("addmm_1", "addmm", True),
        ("einsum", "einsum", True),
        ("einsum_1", "einsum", True),
    ]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        _Counted()(x)
    assert sum(r.macs for r in records) == counter.get_total_flops() // 2 == 6 * 4 * 5 * 3


def test_spec_names_and_object_types_reach_the_new_spellings() -> None:
    x = torch.randn(4, 5)
    spec = (
        amx.Spec()
        .set_global(None)
        .set_object_type(torch.mm, "mul8u_exact")
        .set_object_type("torch.addmm", "mul8s_exact")
        .set_module_name("einsum_1", "mul6u_exact")
    )
    gm = amx.convert(_Counted(), spec, example_inputs=x)
    assert [r.multiplier_name for r in amx.layers(gm)] == [
        "mul8u_exact",
        "mul8u_exact",
        "mul8s_exact",
        "mul8s_exact",
        None,
        "mul6u_exact",
    ]


class _Unconverted(nn.Module):
    """Multiplies no builder converts, next to a one-operand einsum (no multiply at all)."""

    def __init__(self) -> None:
        super().__init__()
        self.bil = nn.Bilinear(5, 4, 2)
        self.w = nn.Parameter(torch.randn(3, 5, 4))
        self.m = nn.Parameter(torch.randn(5, 6))

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        """Bilinear twice, ellipsis / three-operand einsums, addmv, a transpose einsum."""
        return (
            self.bil(x, y),
            F.bilinear(x, y, self.w),
            torch.einsum("...ij,jk->...ik", x, self.m),
            torch.einsum("ij,jk,kl->il", x, self.m, self.m.T),
            torch.addmv(x[:, 0], x, self.m[:, 0]),
            torch.einsum("ij->ji", x),
        )


def test_unconverted_multiplies_warn_and_get_float_records() -> None:
    torch.manual_seed(2)
    x, y = torch.randn(7, 5), torch.randn(7, 4)
    model = _Unconverted()
    with pytest.warns(UserWarning, match="cannot convert 5 multiply") as caught:
        gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"), example_inputs=(x, y))
    message = str(next(w.message for w in caught if "cannot convert" in str(w.message)))
    for part in ("'bil' (bilinear)", "'bilinear' (bilinear)", "'einsum' (einsum)"):
        assert part in message
    records = amx.layers(gm)
    assert [(r.name, r.op, r.approximate) for r in records] == [
        ("bil", "bilinear", False),
        ("bilinear", "bilinear", False),
        ("einsum", "einsum", False),
        ("einsum_1", "einsum", False),
        ("addmv", "addmv", False),
    ]
    # the three-operand einsum: x @ m, then @ m.T (counted in the example run); addmv: 7 x 5
    assert [r.macs for r in records] == [
        7 * 2 * 5 * 4,
        7 * 3 * 5 * 4,
        7 * 5 * 6,
        7 * 5 * 6 + 7 * 6 * 5,
        7 * 5,
    ]
    with torch.no_grad():
        assert all(torch.equal(g, w) for g, w in zip(gm(x, y), model(x, y), strict=True))


def test_float_spec_keeps_the_new_spellings_float_with_records() -> None:
    x = torch.randn(4, 5)
    gm = amx.convert(_Counted(), amx.Spec().set_global(None), example_inputs=x)
    assert [(r.name, r.approximate, r.macs) for r in amx.layers(gm)] == [
        (name, False, 60) for name in ("mm", "mm_1", "addmm", "addmm_1", "einsum", "einsum_1")
    ]


def _matmul_then_terms(a: Tensor, b: Tensor, bias: Tensor) -> Tensor:
    return 0.5 * bias + 2.0 * torch.matmul(a, b)


def _fp_convert(fn: Product, a: Tensor, b: Tensor) -> torch.fx.GraphModule:
    torch.manual_seed(0)
    return amx.convert(_Two(fn, 3), amx.Spec().set_global("fp_mbm5"), example_inputs=(a, b))


def test_fp_multiplier_on_addmm_equals_its_matmul_spelling() -> None:
    """An FP approximate multiplier reaches ``addmm`` as it reaches ``torch.matmul``: the same
    product, then ``beta * input + alpha * product`` in float."""
    torch.manual_seed(4)
    a, b = torch.randn(4, 6), torch.randn(6, 3)
    gm, ref = _fp_convert(_addmm_scaled, a, b), _fp_convert(_matmul_then_terms, a, b)
    assert [(r.op, r.approximate) for r in amx.layers(gm)] == [("addmm", True)]
    assert torch.allclose(gm(a, b), ref(a, b), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(gm(a, b), _addmm_scaled(a, b, gm.bias), rtol=1e-4)  # approximate


class _AddmmWeight(nn.Module):
    """``addmm(bias, x, w)`` with a weight parameter: one activation, exportable by batch."""

    def __init__(self) -> None:
        super().__init__()
        self.w, self.bias = nn.Parameter(torch.randn(6, 3)), nn.Parameter(torch.randn(3))

    def forward(self, x: Tensor) -> Tensor:
        """The product."""
        return torch.addmm(self.bias, x, self.w, beta=0.5, alpha=2.0)


@pytest.mark.parametrize("portable", [False, True])
def test_addmm_exports_and_runs_as_in_pytorch(tmp_path, portable: bool) -> None:
    torch.manual_seed(5)
    x = torch.randn(4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = amx.convert(_AddmmWeight(), amx.Spec().set_global("mul8u_trunc4"))
    amx.calibrate(gm, [x], progress=False)
    gm.eval()
    out = amx.export(gm, x, tmp_path, portable=portable, progress=False)
    assert [layer["op"] for layer in amx.load_exported(out).manifest["layers"]] == ["LutMatMul"]
    got = amx.load_exported(out, portable=portable)(x)
    assert torch.allclose(torch.as_tensor(got), gm(x), rtol=1e-6, atol=1e-6)
