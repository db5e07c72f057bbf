"""Rectangular ``(2**bits_a, 2**bits_b)`` tables on every CPU kernel path: the products equal the
reference (forward bit for bit, gradients within 1e-5), the reference equals a plain Python
loop, the ops pass opcheck and refuse indices past the table."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from appmult_fx.ops import kernels, reference
from appmult_fx.ops import lut_gemm as ops
from appmult_fx.ops.dispatch import use_reference

from .test_kernels_cpu import (
    assert_float_product_close,
    cpu_isas,
    make_operands,
    make_table,
)

# (bits_a, bits_b): narrow weight sides (the register fast path), narrow activation sides (the
# same path on the transposed product), both above 4 bits (byte-permute planes of 128 and 256
# rows), and a square control.
WIDTHS = [(8, 4), (8, 2), (4, 8), (7, 3), (2, 8), (3, 7), (8, 5), (6, 8), (8, 8)]
# (B, M, K, N), ragged everywhere; odd and even K; shapes that make each orientation cheaper.
SHAPES = [
    (1, 1, 1, 1),
    (2, 13, 31, 33),
    (1, 97, 3, 5),
    (1, 300, 70, 20),
    (1, 20, 70, 300),
    (1, 130, 46, 70),
]


def rect_table(bits_a: int, bits_b: int, signed: bool, wide: bool, gen: torch.Generator):
    """An approximate product table (noise, ``T[0][0] != 0``), or, ``wide``, random entries
    spanning more than 16 bits (the paths without 16-bit narrowing)."""
    if wide:
        return torch.randint(-(2**20), 2**20, (1 << bits_a, 1 << bits_b), generator=gen).int()
    return make_table(bits_a, signed, gen, bits_b)


@pytest.fixture(scope="module", params=["portable", "avx2", "avx512"])
def backend(request) -> kernels.CPUBackend:
    if request.param not in cpu_isas():
        pytest.skip(f"this CPU lacks the {request.param} instruction set")
    return kernels.CPUBackend(request.param)


def rectangular_cases(widths=WIDTHS, shapes=SHAPES) -> list[tuple]:
    """(label, a, w, g, table, ga, gw, want): operands and the reference's products (want: y,
    dA, dW; no gradients for the wide tables, the gradient tables being float either way)."""
    gen = torch.Generator().manual_seed(16)
    cases = []
    for bits_a, bits_b in widths:
        ga = torch.randn(1 << bits_a, 1 << bits_b, generator=gen)
        gw = torch.randn(1 << bits_a, 1 << bits_b, generator=gen)
        for signed, wide in ((False, False), (True, False), (True, True)):
            table = rect_table(bits_a, bits_b, signed, wide, gen)
            for shape in shapes:
                a, w, g = make_operands(shape, bits_a, gen, bits_b)
                want = [reference.lut_bmm(a, w, table)]
                if not wide:
                    want += [reference.lut_bmm_grad_a(g, a, w, ga)]
                    want += [reference.lut_bmm_grad_w(g, a, w, gw)]
                label = (bits_a, bits_b, signed, wide, shape)
                cases.append((label, a, w, g, table, ga, gw, want))
    return cases


def check_rectangular(impl, cases, device: str = "cpu") -> None:
    """Every product of ``impl`` against the reference's (``cases``)."""
    for label, a, w, g, table, ga, gw, want in cases:
        dev = [t.to(device) for t in (a, w, g, table, ga, gw)]
        y = impl.lut_bmm(dev[0], dev[1], dev[3]).cpu()
        assert y.dtype == torch.int32 and torch.equal(y, want[0]), label
        if len(want) == 1:
            continue
        da = impl.lut_bmm_grad_a(dev[2], dev[0], dev[1], dev[4]).cpu()
        assert_float_product_close(da, reference.lut_bmm_grad_a, g, a, w, ga)
        dw = impl.lut_bmm_grad_w(dev[2], dev[0], dev[1], dev[5]).cpu()
        assert_float_product_close(dw, reference.lut_bmm_grad_w, g, a, w, gw)


@pytest.fixture(scope="module")
def cases() -> list[tuple]:
    return rectangular_cases()


@pytest.fixture(scope="module")
def block_cases() -> list[tuple]:
    """Shapes past the fast path's blocks: more than 4 x 64 columns, 16-k dA groups plus a tail,
    dW sweeps over several 128-row blocks, batches; weight and activation side narrow."""
    shapes = [(2, 259, 37, 131), (1, 600, 18, 200), (1, 33, 257, 64)]
    return rectangular_cases([(8, 4), (8, 2), (4, 8)], shapes)


def test_every_cpu_path_matches_reference(backend, cases) -> None:
    check_rectangular(backend, cases)


def test_fast_path_blocks(backend, block_cases) -> None:
    check_rectangular(backend, block_cases)


@settings(max_examples=25, deadline=None)
@given(
    bits=st.tuples(st.integers(2, 8), st.integers(2, 8)),
    shape=st.tuples(st.integers(1, 2), st.integers(1, 70), st.integers(1, 40), st.integers(1, 70)),
    signed=st.booleans(),
    isa=st.sampled_from(["portable", "avx2", "avx512"]),
)
def test_any_width_pair_and_shape(bits, shape, signed: bool, isa: str) -> None:
    """Property: any (bits_a, bits_b) in [2, 8]^2 and shape, on any ISA path this CPU has."""
    if isa not in cpu_isas():
        isa = "portable"
    gen = torch.Generator().manual_seed(sum(bits) * 1000 + sum(shape))
    backend = kernels.CPUBackend(isa)
    table = rect_table(*bits, signed, False, gen)
    ga = torch.randn(1 << bits[0], 1 << bits[1], generator=gen)
    a, w, g = make_operands(shape, bits[0], gen, bits[1])
    assert torch.equal(backend.lut_bmm(a, w, table), reference.lut_bmm(a, w, table))
    da = backend.lut_bmm_grad_a(g, a, w, ga)
    assert_float_product_close(da, reference.lut_bmm_grad_a, g, a, w, ga)
    dw = backend.lut_bmm_grad_w(g, a, w, ga)
    assert_float_product_close(dw, reference.lut_bmm_grad_w, g, a, w, ga)


def test_reference_matches_python_loop() -> None:
    """The reference against sums written out term by term (8x2, 3x5 tables)."""
    gen = torch.Generator().manual_seed(7)
    for bits_a, bits_b in ((8, 2), (3, 5)):
        table = rect_table(bits_a, bits_b, True, False, gen)
        gtab = torch.randn(1 << bits_a, 1 << bits_b, generator=gen)
        a, w, g = make_operands((2, 3, 5, 4), bits_a, gen, bits_b)
        y, da, dw = {}, {}, {}
        for b, m, k, n in itertools.product(range(2), range(3), range(5), range(4)):
            u, v = int(a[b, m, k]), int(w[b, k, n])
            y[b, m, n] = y.get((b, m, n), 0) + int(table[u, v])
            term = float(g[b, m, n]) * float(gtab[u, v])
            da[b, m, k] = da.get((b, m, k), 0.0) + term
            dw[b, k, n] = dw.get((b, k, n), 0.0) + term
        got = (
            reference.lut_bmm(a, w, table),
            reference.lut_bmm_grad_a(g, a, w, gtab),
            reference.lut_bmm_grad_w(g, a, w, gtab),
        )
        for want, ref in zip((y, da, dw), got, strict=True):
            assert len(want) == ref.numel()
            for index, value in want.items():
                assert float(ref[index]) == pytest.approx(value, rel=1e-5, abs=1e-6), index
        assert all(int(got[0][i]) == v for i, v in y.items())  # the forward exactly


def test_opcheck_rectangular(kernels_active) -> None:
    gen = torch.Generator().manual_seed(4)
    for bits_a, bits_b in ((8, 4), (3, 7)):
        table = rect_table(bits_a, bits_b, True, False, gen)
        ga = torch.randn(1 << bits_a, 1 << bits_b, generator=gen)
        gw = torch.randn(1 << bits_a, 1 << bits_b, generator=gen)
        a, w, g = make_operands((1, 5, 27, 3), bits_a, gen, bits_b)
        torch.library.opcheck(torch.ops.appmult.lut_bmm, (a, w, table))
        torch.library.opcheck(torch.ops.appmult.lut_bmm_grad_a, (g, a, w, ga))
        torch.library.opcheck(torch.ops.appmult.lut_bmm_grad_w, (g, a, w, gw))


@pytest.mark.parametrize("reference_body", [False, True], ids=["kernels", "reference"])
def test_ops_refuse_indices_past_the_table(reference_body: bool) -> None:
    """An index of a at or past the row count, or of w past the column count, is refused by
    all three ops (with the kernels and with the reference body); in-range indices pass."""
    table = torch.zeros(256, 16, dtype=torch.int32)
    gtab = torch.zeros(256, 16)
    a = torch.full((1, 2, 3), 255, dtype=torch.uint8)
    w = torch.full((1, 3, 2), 15, dtype=torch.uint8)
    g = torch.ones(1, 2, 2)
    previous = use_reference(reference_body)
    try:
        assert ops.lut_bmm(a, w, table).shape == (1, 2, 2)
        bad_w = w.clone()
        bad_w[0, 2, 1] = 16
        bad_a = a.clone().fill_(3)
        bad_a[0, 1, 0] = 16
        narrow = torch.zeros(16, 256, dtype=torch.int32)
        cases = [
            (lambda: ops.lut_bmm(a, bad_w, table), "w below the table's 16 columns, got 16"),
            (lambda: ops.lut_bmm_grad_a(g, a, bad_w, gtab), "w below the table's 16 columns"),
            (lambda: ops.lut_bmm_grad_w(g, a, bad_w, gtab), "w below the table's 16 columns"),
            (lambda: ops.lut_bmm(bad_a, w, narrow), "a below the table's 16 rows, got 16"),
            (lambda: ops.lut_bmm_grad_w(g, bad_a, w, narrow.float()), "a below the table's 16"),
        ]
        for run, message in cases:
            with pytest.raises(RuntimeError, match=message):
                run()
    finally:
        use_reference(previous)


def test_bindings_refuse_widths_outside_the_rule() -> None:
    """The C++ table check takes each side on its own: a side that is not 2**bits with bits in
    [MIN_BITS, MAX_BITS] is refused, whatever the other side."""
    ext = kernels.cpu_extension()
    a = torch.zeros(1, 2, 3, dtype=torch.uint8)
    w = torch.zeros(1, 3, 2, dtype=torch.uint8)
    g = torch.ones(1, 2, 2)
    for shape in ((256, 2), (2, 256), (256, 512), (256, 12), (3, 16)):
        table = torch.zeros(shape, dtype=torch.int32)
        for run in (
            lambda t=table: ext.lut_bmm(a, w, t, "auto"),
            lambda t=table: ext.lut_bmm_grad_a(g, a, w, t.float(), "auto"),
            lambda t=table: ext.lut_bmm_grad_w(g, a, w, t.float(), "auto"),
        ):
            with pytest.raises(RuntimeError, match=r"\(2\*\*bits_a, 2\*\*bits_b\) table"):
                run()
    ok = torch.ones(256, 4, dtype=torch.int32)
    assert torch.equal(ext.lut_bmm(a, w, ok, "auto"), torch.full((1, 2, 2), 3, dtype=torch.int32))
