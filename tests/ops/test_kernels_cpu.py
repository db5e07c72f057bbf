"""CPU LUT-GEMM kernels against the pure-PyTorch reference (every ISA path), and opcheck."""

from __future__ import annotations

import shutil
from functools import partial

import pytest
import torch
from appmult_fx.luts.indexing import MAX_BITS, MIN_BITS, check_bits, operand_values
from torch import Tensor

from appmult_fx.ops import kernels, reference
from appmult_fx.ops import lut_gemm as _ops  # noqa: F401  (registers torch.ops.appmult)
from appmult_fx.ops.dispatch import use_reference

# (B, M, K, N): K = 27 (3x3x3 conv), primes, ones, and sizes just past a 32-column tile.
SHAPES = [
    (1, 1, 1, 1),
    (1, 5, 27, 7),
    (2, 13, 31, 33),
    (1, 64, 1, 65),
    (3, 7, 17, 2),
    (1, 41, 9, 97),
    (1, 97, 3, 5),
]
RELATIVE_TOLERANCE = 1e-5


def make_table(bits: int, signed: bool, gen: torch.Generator, bits_b: int | None = None):
    """An approximate ``bits`` x ``bits_b``-bit (default square) product table with noise and
    ``T[0][0] != 0``."""
    va, vb = operand_values(bits, signed), operand_values(bits_b or bits, signed)
    table = torch.outer(va, vb) + torch.randint(-3, 4, (len(va), len(vb)), generator=gen)
    table[0, 0] = 5
    return table.to(torch.int32)


def make_operands(
    shape: tuple[int, int, int, int], bits: int, gen: torch.Generator, bits_b: int | None = None
):
    """Random indices a [B,M,K] < 2**bits, w [B,K,N] < 2**bits_b (default ``bits``) and a
    gradient g [B,M,N]."""
    b, m, k, n = shape
    a = torch.randint(0, 1 << bits, (b, m, k), generator=gen, dtype=torch.uint8)
    w = torch.randint(0, 1 << (bits_b or bits), (b, k, n), generator=gen, dtype=torch.uint8)
    g = torch.randn(b, m, n, generator=gen)
    return a, w, g


def assert_float_product_close(impl, oracle_fn, g, a, w, table) -> None:
    """``impl`` within 1e-5 of the float64 oracle, relative to the sum of |terms|."""
    exact = oracle_fn(g.double(), a, w, table.double())
    scale = oracle_fn(g.abs().double(), a, w, table.abs().double())
    err = (impl.double() - exact).abs()
    bound = RELATIVE_TOLERANCE * scale + 1e-30
    assert impl.dtype == torch.float32 and impl.shape == exact.shape
    assert bool((err <= bound).all()), f"max error {float((err - bound).max())} over bound"


def check_backend(backend, device: str) -> None:
    """Every product, bit width 2..8, signed and unsigned, every shape, against the reference."""
    gen = torch.Generator().manual_seed(1)
    for bits in range(2, 9):
        for signed in (False, True):
            table = make_table(bits, signed, gen)
            ga = torch.randn(1 << bits, 1 << bits, generator=gen)
            gw = torch.randn(1 << bits, 1 << bits, generator=gen)
            for shape in SHAPES:
                a, w, g = make_operands(shape, bits, gen)
                dev = [t.to(device) for t in (a, w, g, table, ga, gw)]
                y = backend.lut_bmm(dev[0], dev[1], dev[3]).cpu()
                assert y.dtype == torch.int32
                assert torch.equal(y, reference.lut_bmm(a, w, table)), (bits, signed, shape)
                da = backend.lut_bmm_grad_a(dev[2], dev[0], dev[1], dev[4]).cpu()
                assert_float_product_close(da, reference.lut_bmm_grad_a, g, a, w, ga)
                dw = backend.lut_bmm_grad_w(dev[2], dev[0], dev[1], dev[5]).cpu()
                assert_float_product_close(dw, reference.lut_bmm_grad_w, g, a, w, gw)


def check_wraparound(backend, device: str) -> None:
    """Sums wrap modulo 2**32 exactly like the reference: full-range int32 tables (32-bit path)
    and a 16-bit-range table offset near 2**31 (16-bit path with its K * offset correction)."""
    gen = torch.Generator().manual_seed(2)
    for bits, narrow in ((3, False), (8, False), (8, True)):
        n = 1 << bits
        if narrow:
            v = torch.arange(n)
            table = (torch.outer(v, v) + (2**31 - 70000)).to(torch.int32)
        else:
            table = torch.randint(-(2**31), 2**31 - 1, (n, n), generator=gen, dtype=torch.int32)
        a, w, _ = make_operands((2, 37, 300, 35), bits, gen)
        y = backend.lut_bmm(a.to(device), w.to(device), table.to(device)).cpu()
        assert torch.equal(y, reference.lut_bmm(a, w, table))


def cpu_isas() -> list[str]:
    """The instruction-set paths this CPU can run."""
    best = kernels.cpu_extension().best_isa()
    return {
        "portable": ["portable"],
        "avx2": ["portable", "avx2"],
        "avx512": ["portable", "avx2", "avx512"],
    }[best]


@pytest.fixture(scope="module", params=["portable", "avx2", "avx512"])
def cpu_backend(request) -> kernels.CPUBackend:
    if request.param not in cpu_isas():
        pytest.skip(f"this CPU lacks the {request.param} instruction set")
    backend = kernels.CPUBackend(request.param)
    assert backend.resolved_isa() == request.param
    return backend


def test_cpu_matches_reference(cpu_backend) -> None:
    check_backend(cpu_backend, "cpu")


def test_cpu_forward_wraps_like_reference(cpu_backend) -> None:
    check_wraparound(cpu_backend, "cpu")


def test_cpu_larger_shapes_both_orientations(cpu_backend) -> None:
    """Shapes that take the transposed (rows over N) and the direct orientation of every
    product (the binding picks by shape), several threads."""
    gen = torch.Generator().manual_seed(3)
    table = make_table(7, False, gen)
    ga, gw = torch.randn(128, 128, generator=gen), torch.randn(128, 128, generator=gen)
    for shape in [(1, 300, 70, 20), (1, 20, 70, 300), (2, 130, 45, 70)]:
        a, w, g = make_operands(shape, 7, gen)
        assert torch.equal(cpu_backend.lut_bmm(a, w, table), reference.lut_bmm(a, w, table))
        da = cpu_backend.lut_bmm_grad_a(g, a, w, ga)
        assert_float_product_close(da, reference.lut_bmm_grad_a, g, a, w, ga)
        dw = cpu_backend.lut_bmm_grad_w(g, a, w, gw)
        assert_float_product_close(dw, reference.lut_bmm_grad_w, g, a, w, gw)


def test_cpu_gradient_blocks(cpu_backend) -> None:
    """Gradient shapes that take every block of the AVX-512 kernels at 7 and 8 bits: k groups
    split into blocks of 16, 8, 4, 2 and 1, rows split across tasks, more than 8 vectors per G
    row (N > 128: dA in column chunks of 128 added up, the last one ragged), tail columns,
    batches, dW sweeps over several row blocks (M > 8192) and dA through the dW kernel on the
    transposed product (M much smaller than N)."""
    gen = torch.Generator().manual_seed(6)
    for bits in (7, 8):
        ga = torch.randn(1 << bits, 1 << bits, generator=gen)
        gw = torch.randn(1 << bits, 1 << bits, generator=gen)
        for shape in [
            (1, 2100, 40, 20),
            (1, 600, 31, 150),
            (1, 2100, 19, 300),
            (2, 1100, 20, 24),
            (1, 8200, 3, 17),
            (2, 20, 33, 200),
        ]:
            a, w, g = make_operands(shape, bits, gen)
            da = cpu_backend.lut_bmm_grad_a(g, a, w, ga)
            assert_float_product_close(da, reference.lut_bmm_grad_a, g, a, w, ga)
            dw = cpu_backend.lut_bmm_grad_w(g, a, w, gw)
            assert_float_product_close(dw, reference.lut_bmm_grad_w, g, a, w, gw)


def skewed_codes(shape: tuple[int, ...], rows: int, rare: int, gen: torch.Generator) -> Tensor:
    """Codes < ``rows`` that are mostly 0 and ``rows - 1`` (as after a ReLU that saturates),
    with ``rare`` other codes per k along dim 1, each in a single random position."""
    b, m, k = shape
    coin = torch.rand(shape, generator=gen)
    codes = torch.where(coin < 0.6, 0, rows - 1).to(torch.uint8)
    for _ in range(rare):
        at = torch.randint(0, m, (b, k), generator=gen)
        other = torch.randint(1, rows - 1, (b, k), generator=gen, dtype=torch.uint8)
        codes.scatter_(1, at.unsqueeze(1), other.unsqueeze(1))
    return codes


def test_cpu_gradients_with_few_codes_per_k(cpu_backend) -> None:
    """The AVX-512 gradient kernels build only the groups of 4 table rows a k's codes reach
    where few rows are swept against a wide table (under 16 per table row): codes that are
    mostly two values, with a few others in one row each (a scan that missed one would leave a
    stale table row), ragged columns, both orientations of dA and dW, batches, few and many
    other codes, square, rectangular and small tables."""
    gen = torch.Generator().manual_seed(11)
    for bits_a, bits_b, (b, m, k, n), rare in [
        (8, 8, (1, 200, 70, 37), 3),
        (8, 8, (2, 96, 33, 150), 100),
        (7, 8, (1, 300, 40, 20), 5),
        (8, 7, (1, 24, 45, 400), 2),
        (5, 8, (2, 40, 70, 33), 4),
        (8, 6, (3, 64, 20, 900), 3),
    ]:
        ga = torch.randn(1 << bits_a, 1 << bits_b, generator=gen)
        gw = torch.randn(1 << bits_a, 1 << bits_b, generator=gen)
        a = skewed_codes((b, m, k), 1 << bits_a, rare, gen)
        w = skewed_codes((b, n, k), 1 << bits_b, rare, gen).transpose(1, 2).contiguous()
        g = torch.randn(b, m, n, generator=gen)
        da = cpu_backend.lut_bmm_grad_a(g, a, w, ga)
        assert_float_product_close(da, reference.lut_bmm_grad_a, g, a, w, ga)
        dw = cpu_backend.lut_bmm_grad_w(g, a, w, gw)
        assert_float_product_close(dw, reference.lut_bmm_grad_w, g, a, w, gw)


def codes_with_dead_rows(
    shape: tuple[int, int, int], n: int, dead: Tensor, gen: torch.Generator
) -> Tensor:
    """Codes < ``n`` along dim 2 of ``shape`` where ``dead`` (1-D, the codes of all-zero table
    rows) is common: a third of the rows (dim 1) hold only dead codes, the others a dead code
    at half their places and random codes elsewhere, so runs of dead codes of every length
    occur."""
    b, m, k = shape
    pick = dead[torch.randint(0, len(dead), shape, generator=gen)].to(torch.uint8)
    other = torch.randint(0, n, shape, generator=gen, dtype=torch.uint8)
    row_dead = torch.rand(b, m, 1, generator=gen) < 1 / 3
    place_dead = torch.rand(shape, generator=gen) < 0.5
    return torch.where(row_dead | place_dead, pick, other)


def skip_counts() -> tuple[int, int, int]:
    """(forward calls that skipped all-zero rows, dW row blocks that left rows out, dA calls
    that skipped dead runs) so far."""
    return tuple(kernels.cpu_extension().skip_counts())


def dead_codes(n: int, with_zero: bool, gen: torch.Generator) -> Tensor:
    """Codes of all-zero table rows: code 0 (a zero operand) and others, or others only, so
    that code 0, which masked loads read past a run of codes, is sometimes a live code."""
    others = torch.randperm(n - 1, generator=gen)[:4] + 1
    return torch.cat([torch.tensor([0]), others[:2]]) if with_zero else others


def test_cpu_gradients_skip_rows_of_zeros(cpu_backend) -> None:
    """A gradient table with all-zero rows (GW's row of code 0 for any multiplier with
    ``T[0, :] = 0``; -0.0 too): the AVX-512 dW kernel leaves out the swept rows whose codes
    reach only those (the extension's counter shows it did), which must give the reference's
    sums, for every group width R of the kernel (8 bits < 4096 rows: 2; 7 bits: 4; 8 bits
    >= 4096 rows and <= 6 bits: 8), ragged blocks of 256 rows, several 8192-row sweeps,
    batches, dead codes with and without code 0, and dA through the same kernel (GA's zero
    columns reached by the weight codes): with M small against N (`transposed`) both products
    run through the other's kernel, so dA skips and dW does not. With a NaN or an inf in G
    where a row or column would be left out, nothing may be left out."""
    gen = torch.Generator().manual_seed(12)
    counts = cpu_backend.resolved_isa() == "avx512"
    for case, (bits_a, bits_b, (b, m, k, n), transposed) in enumerate(
        [
            (8, 8, (1, 300, 21, 37), False),
            (8, 8, (2, 256, 9, 16), False),
            (7, 8, (1, 777, 13, 20), False),
            (8, 8, (1, 9000, 10, 17), False),
            (6, 6, (2, 530, 19, 33), False),
            (8, 5, (1, 4100, 6, 40), False),
            (8, 8, (1, 16, 40, 600), True),
            (7, 7, (2, 8, 33, 900), True),
        ]
    ):
        na, nb = 1 << bits_a, 1 << bits_b
        gw, ga = torch.randn(na, nb, generator=gen), torch.randn(na, nb, generator=gen)
        dead_a = dead_codes(na, case % 2 == 0, gen)
        dead_b = dead_codes(nb, case % 2 == 1, gen)
        gw[dead_a] = 0.0
        gw[dead_a[1]] = -0.0
        ga[:, dead_b] = 0.0
        a = codes_with_dead_rows((b, m, k), na, dead_a, gen)
        w = codes_with_dead_rows((b, n, k), nb, dead_b, gen).transpose(1, 2).contiguous()
        g = torch.randn(b, m, n, generator=gen)
        before = skip_counts()
        dw = cpu_backend.lut_bmm_grad_w(g, a, w, gw)
        assert_float_product_close(dw, reference.lut_bmm_grad_w, g, a, w, gw)
        assert not counts or (skip_counts()[1] > before[1]) != transposed, ("dW", case)
        before = skip_counts()
        da = cpu_backend.lut_bmm_grad_a(g, a, w, ga)
        assert_float_product_close(da, reference.lut_bmm_grad_a, g, a, w, ga)
        assert not counts or (skip_counts()[1] > before[1]) == transposed, ("dA", case)
        row = int(torch.nonzero(torch.isin(a[0], dead_a).all(1))[0])  # a dW row left out
        col = int(torch.nonzero(torch.isin(w[0], dead_b).all(0))[0])  # a dA row left out
        g[0, row, n // 2] = float("inf")
        g[0, m // 2, col] = float("nan")
        for impl, oracle, table in (
            (cpu_backend.lut_bmm_grad_w, reference.lut_bmm_grad_w, gw),
            (cpu_backend.lut_bmm_grad_a, reference.lut_bmm_grad_a, ga),
        ):
            before = skip_counts()
            got = impl(g, a, w, table).double()
            assert skip_counts() == before, ("rows left out despite a NaN in G", case)
            want = oracle(g.double(), a, w, table.double()).double()
            assert torch.equal(got.isnan(), want.isnan()) and bool(got.isnan().any())
            assert torch.equal(got.isinf(), want.isinf())
            assert torch.equal(got[got.isinf()], want[want.isinf()])
            finite = want.isfinite()
            assert torch.allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)


def test_cpu_forward_row_blocks(cpu_backend) -> None:
    """Shapes that take every row block of the byte-permute forward (64, 128, 256 rows, partial
    blocks) in both orientations, 5 to 8 bits (one-, two- and four-register planes)."""
    gen = torch.Generator().manual_seed(5)
    for bits in (5, 6, 7, 8):
        table = make_table(bits, False, gen) + 40000  # narrowed with a non-zero offset
        for shape in [
            (1, 1030, 9, 3),
            (1, 3, 9, 1030),
            (2, 128, 5, 700),
            (1, 256, 7, 256),
            (1, 777, 130, 128),
            (1, 64, 300, 10),
        ]:
            a, w, _ = make_operands(shape, bits, gen)
            assert torch.equal(cpu_backend.lut_bmm(a, w, table), reference.lut_bmm(a, w, table))


def test_cpu_forward_skips_steps_of_zero_rows(cpu_backend) -> None:
    """Tables with all-zero rows (``T[0, :] = 0``, as any multiplier has for a zero operand, or
    other rows) against codes that reach them often (a ReLU's zeros): the byte-permute forward
    then runs its rows over N and skips each column's steps through those rows (the
    extension's counter shows it did), bit for bit the reference, for row blocks of 64, 128
    and 256, ragged slices of k, a column with no live step, batches, every plane size, and
    a table narrowed with an offset whose rows equal to the offset are skipped. Rows of zeros
    that the narrowing shifts by an offset are not all-zero in the planes and must not be
    skipped."""
    gen = torch.Generator().manual_seed(13)
    counts = cpu_backend.resolved_isa() == "avx512"
    for case, (bits_a, bits_b, shape, share) in enumerate(
        [
            (8, 8, (1, 130, 1100, 70), 0.6),  # rows over N in blocks of 64, 3 slices of k
            (7, 8, (2, 300, 700, 128), 0.7),  # blocks of 128
            (8, 8, (1, 200, 300, 1030), 0.65),  # blocks of 256, a partial one
            (8, 7, (1, 90, 530, 256), 0.8),  # 128 planes of weight codes
            (8, 6, (2, 65, 260, 64), 0.9),  # 64 planes
            (6, 8, (1, 100, 601, 512), 0.8),
        ]
    ):
        b, m, k, n = shape
        a, w, _ = make_operands(shape, bits_a, gen, bits_b)
        dead = dead_codes(1 << bits_a, case % 2 == 0, gen)
        pick = dead[torch.randint(0, len(dead), a.shape, generator=gen)].to(torch.uint8)
        a = torch.where(torch.rand(a.shape, generator=gen) < share, pick, a)
        a[0, m // 2] = pick[0, m // 2]  # a column over N with no live step
        signed = make_table(bits_a, True, gen, bits_b)  # fits 16 bits: no offset
        shifted = torch.randint(40000, 100000, signed.shape, generator=gen, dtype=torch.int32)
        offset = int(shifted.min()) + 32768  # the narrowing's offset: entries T - offset
        wide = torch.randint(1, 65000, signed.shape, generator=gen, dtype=torch.int32)
        for table, value, skips in ((signed, 0, True), (shifted, offset, True), (wide, 0, False)):
            table = table.clone()
            table[dead] = value  # all-zero entries, but for `wide` (offset 32768: -32768)
            before = skip_counts()[0]
            got = cpu_backend.lut_bmm(a, w, table)
            assert torch.equal(got, reference.lut_bmm(a, w, table)), (case, value)
            assert not counts or (skip_counts()[0] > before) == skips, (case, value)


def test_cpu_empty_shapes(cpu_backend) -> None:
    table = torch.ones(4, 4, dtype=torch.int32)
    a = torch.zeros(1, 3, 0, dtype=torch.uint8)
    w = torch.zeros(1, 0, 2, dtype=torch.uint8)
    assert torch.equal(cpu_backend.lut_bmm(a, w, table), torch.zeros(1, 3, 2, dtype=torch.int32))
    g = torch.ones(1, 3, 2)
    assert cpu_backend.lut_bmm_grad_w(g, a, w, table.float()).shape == (1, 0, 2)


def check_bit_limits(ext, calls, device: str) -> None:
    """``ext`` was compiled with luts.indexing's rule and its table check refuses a width
    exactly when ``check_bits`` does (one width below and above the range included)."""
    assert tuple(ext.bit_limits()) == (MIN_BITS, MAX_BITS)
    a = torch.zeros(1, 2, 3, dtype=torch.uint8, device=device)
    w = torch.zeros(1, 3, 2, dtype=torch.uint8, device=device)
    g = torch.ones(1, 2, 2, device=device)
    for bits in range(MIN_BITS - 1, MAX_BITS + 2):
        n = 1 << bits
        table = torch.zeros(n, n, dtype=torch.int32, device=device)
        grad = torch.ones(n, n, device=device)
        runs = [
            partial(calls.lut_bmm, a, w, table),
            partial(calls.lut_bmm_grad_a, g, a, w, grad),
            partial(calls.lut_bmm_grad_w, g, a, w, grad),
        ]
        try:
            check_bits(bits)
        except ValueError:
            for run in runs:
                with pytest.raises(RuntimeError, match=rf"bits in \[{MIN_BITS}, {MAX_BITS}\]"):
                    run()
        else:
            assert [tuple(run().shape) for run in runs] == [(1, 2, 2), (1, 2, 3), (1, 3, 2)]


def test_cpu_kernel_checks_the_one_bit_width_rule(cpu_backend) -> None:
    check_bit_limits(kernels.cpu_extension(), cpu_backend, "cpu")


def test_backend_for_cpu_is_the_kernel(monkeypatch) -> None:
    monkeypatch.delenv("APPMULT_FX_CPU_ISA", raising=False)
    assert isinstance(kernels.backend_for(torch.device("cpu")), kernels.CPUBackend)
    assert kernels.backend_for(torch.device("meta")) is None


def test_bad_isa_is_rejected() -> None:
    with pytest.raises(ValueError, match="isa"):
        kernels.CPUBackend("sse9")
    a = torch.zeros(1, 2, 2, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="expected isa"):
        kernels.cpu_extension().lut_bmm(a, a, torch.zeros(4, 4, dtype=torch.int32), "sse9")


def test_opcheck_with_kernels_active(kernels_active) -> None:
    gen = torch.Generator().manual_seed(4)
    table = make_table(5, True, gen)
    ga, gw = torch.randn(32, 32, generator=gen), torch.randn(32, 32, generator=gen)
    a, w, g = make_operands((1, 5, 27, 3), 5, gen)
    ops = torch.ops.appmult
    torch.library.opcheck(ops.lut_bmm, (a, w, table))
    torch.library.opcheck(ops.lut_bmm_grad_a, (g, a, w, ga))
    torch.library.opcheck(ops.lut_bmm_grad_w, (g, a, w, gw))


def test_compile_failure_names_the_reference_switch(tmp_path, monkeypatch) -> None:
    """A broken source raises a clear error pointing at APPMULT_FX_REFERENCE=1 (no fallback)."""
    src = tmp_path / "src"
    shutil.copytree(kernels.source_dir(), src)
    main = src / "lut_gemm_cpu.cpp"
    main.write_text('#include "deliberately_missing_header.h"\n' + main.read_text())
    monkeypatch.setattr(kernels, "source_dir", lambda: src)
    monkeypatch.setenv("APPMULT_FX_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="APPMULT_FX_REFERENCE=1"):
        kernels.cpu_extension.__wrapped__()


def test_ops_dispatch_to_the_registered_cpu_kernel(monkeypatch) -> None:
    """With kernels active the CPU kernel serves the op (via torch.library, no Python choice);
    ``use_reference(True)`` puts the reference back; both give the same result."""
    calls = []
    real = kernels.backend_for

    def spy(device):
        calls.append(device.type)
        return real(device)

    monkeypatch.setattr(kernels, "backend_for", spy)
    gen = torch.Generator().manual_seed(8)
    table = make_table(4, False, gen)
    a, w, g = make_operands((1, 3, 5, 2), 4, gen)
    previous = use_reference(False)
    try:
        kernel = torch.ops.appmult.lut_bmm(a, w, table)
        dw = torch.ops.appmult.lut_bmm_grad_w(g, a, w, table.float())
        assert calls == ["cpu", "cpu"]
        use_reference(True)
        assert torch.equal(torch.ops.appmult.lut_bmm(a, w, table), kernel)
        assert torch.allclose(torch.ops.appmult.lut_bmm_grad_w(g, a, w, table.float()), dw)
        assert calls == ["cpu", "cpu"]
    finally:
        use_reference(previous)
    assert torch.equal(kernel, reference.lut_bmm(a, w, table))


def test_rows_in_use_is_the_smallest_power_of_two_view() -> None:
    """The leading 2**b rows (b >= MIN_BITS; b >= 5 against a weight side wider than 4 bits)
    that hold the top index, a view; the table itself when every row is needed."""
    narrow = torch.arange(256 * 16, dtype=torch.int32).reshape(256, 16)
    wide = torch.arange(256 * 32, dtype=torch.int32).reshape(256, 32)
    for top, rows, rows_wide in [
        (0, 4, 32),
        (3, 4, 32),
        (4, 8, 32),
        (31, 32, 32),
        (32, 64, 64),
        (63, 64, 64),
        (64, 128, 128),
        (127, 128, 128),
    ]:
        for table, want in ((narrow, rows), (wide, rows_wide)):
            cut = _ops.rows_in_use(table, top)
            assert cut.shape == (want, table.shape[1]), (top, table.shape)
            assert cut.data_ptr() == table.data_ptr() and cut.is_contiguous()
    for table in (narrow, wide):
        assert _ops.rows_in_use(table, 128) is table and _ops.rows_in_use(table, 255) is table
    small = torch.zeros(32, 32, dtype=torch.int32)
    assert _ops.rows_in_use(small, 0) is small  # a 5-bit side against 5-bit weights stays whole


@pytest.mark.parametrize("bits_a,bits_b", [(8, 8), (7, 7), (8, 4), (5, 8)])
def test_ops_read_only_the_table_rows_the_indices_reach(
    kernels_active, monkeypatch, bits_a, bits_b
) -> None:
    """Activation indices that stay below a power of two (e.g. ReLU outputs of a signed
    multiplier: codes 0..127 of an 8-bit table) run the kernels on the leading rows of the tables
    only; the sums equal the reference's on the whole tables (bit for bit forward, 1e-5 for the
    gradients), with the top index on both sides of each cut, and the kernels did get the cut."""
    gen = torch.Generator().manual_seed(11)
    table = make_table(bits_a, True, gen, bits_b)
    ga, gw = (torch.randn(1 << bits_a, 1 << bits_b, generator=gen) for _ in range(2))
    seen = []
    backend = kernels.backend_for(torch.device("cpu"))

    class Spy:  # the backend, noting the row count of each table it gets
        def __getattr__(self, name):
            def run(*args):
                seen.append(args[-1].shape[0])
                return getattr(backend, name)(*args)

            return run

    monkeypatch.setattr(kernels, "backend_for", lambda device: Spy())
    ops = torch.ops.appmult
    tops = sorted({t for b in range(1, bits_a) for t in ((1 << b) - 1, 1 << b)})
    for top in tops:
        for shape in [(1, 37, 29, 19), (2, 130, 45, 70)]:
            a, w, g = make_operands(shape, bits_a, gen, bits_b)
            a = torch.remainder(a, top + 1)
            a[0, 0, 0] = top
            seen.clear()
            y = ops.lut_bmm(a, w, table)
            da = ops.lut_bmm_grad_a(g, a, w, ga)
            dw = ops.lut_bmm_grad_w(g, a, w, gw)
            floor = 5 if bits_b > 4 else MIN_BITS
            expected_rows = min(1 << bits_a, 1 << max(floor, top.bit_length()))
            assert seen == [expected_rows] * 3, (top, seen)
            assert torch.equal(y, reference.lut_bmm(a, w, table)), (top, shape)
            assert_float_product_close(da, reference.lut_bmm_grad_a, g, a, w, ga)
            assert_float_product_close(dw, reference.lut_bmm_grad_w, g, a, w, gw)


def dead_run_flags(shape: tuple[int, int, int], share: float, gen: torch.Generator) -> Tensor:
    """uint8 flags ``[B, M, ceil(K / 16)]``: about ``share`` of the runs dead, whole rows of
    them in some rows (as the padding's taps are)."""
    b, m, k = shape
    runs = (b, m, -(-k // reference.RUN))
    dead = torch.rand(runs, generator=gen) < share
    dead |= torch.rand(b, m, 1, generator=gen) < 0.1
    return dead.to(torch.uint8)


def test_cpu_grad_a_leaves_dead_runs_zero(cpu_backend) -> None:
    """dA with dead-run flags: exactly 0 in every flagged run of 16 k, the reference's sums
    elsewhere (1e-5), for groups of k that the AVX-512 kernel aligns to the runs (tables of 64,
    128 and 256 rows against 1 to 3 chunks of columns, K not a multiple of 16, batches); the
    extension's counter shows that its direct kernel took the flags where M is large against N.
    Flags of the wrong shape are refused."""
    gen = torch.Generator().manual_seed(31)
    counts = cpu_backend.resolved_isa() == "avx512"
    for bits_a, bits_b, (b, m, k, n), direct in [
        (8, 8, (1, 3000, 70, 40), True),
        (7, 8, (2, 1500, 600, 130), True),
        (6, 8, (1, 2100, 48, 300), True),
        (8, 8, (1, 4000, 37, 20), True),
        (8, 8, (1, 12, 200, 700), False),
        (8, 4, (1, 500, 33, 30), False),
    ]:
        ga = torch.randn(1 << bits_a, 1 << bits_b, generator=gen)
        a, w, g = make_operands((b, m, k, n), bits_a, gen, bits_b)
        dead = dead_run_flags((b, m, k), 0.4, gen)
        before = skip_counts()
        got = cpu_backend.lut_bmm_grad_a(g, a, w, ga, dead)
        taken = skip_counts()[2] > before[2]
        assert not counts or taken == direct, (bits_a, m, k, n)
        entries = dead.bool().repeat_interleave(reference.RUN, dim=2)[:, :, :k]
        assert bool((got[entries] == 0).all()) and not bool(got[entries].signbit().any())
        want = reference.lut_bmm_grad_a(g.double(), a, w, ga.double())
        scale = reference.lut_bmm_grad_a(g.abs().double(), a, w, ga.abs().double())
        err = (got.double() - want).abs()[~entries]
        assert bool((err <= RELATIVE_TOLERANCE * scale[~entries] + 1e-30).all())
    with pytest.raises(RuntimeError, match="dead-run flags"):
        cpu_backend.lut_bmm_grad_a(g, a, w, ga, dead[:, :, :-1].contiguous())


def test_grad_a_op_takes_dead_runs() -> None:
    """``appmult::lut_bmm_grad_a`` with dead-run flags: the reference's zeroed runs on the
    compiled CPU kernel, and opcheck (schema, fake tensor, dispatch)."""
    assert kernels.cpu_extension().dead_run() == reference.RUN  # one run length everywhere
    gen = torch.Generator().manual_seed(32)
    a, w, g = make_operands((2, 50, 40, 9), 6, gen)
    ga = torch.randn(64, 64, generator=gen)
    dead = dead_run_flags((2, 50, 40), 0.5, gen)
    got = torch.ops.appmult.lut_bmm_grad_a(g, a, w, ga, dead)
    want = reference.zero_dead_runs(reference.lut_bmm_grad_a(g, a, w, ga), dead)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.library.opcheck(torch.ops.appmult.lut_bmm_grad_a, (g, a, w, ga, dead))
    with pytest.raises(RuntimeError, match="dead-run flags"):
        torch.ops.appmult.lut_bmm_grad_a(g, a, w, ga, dead[:, :, :2])
