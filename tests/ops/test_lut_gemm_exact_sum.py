"""The attack on integer accumulation: sums that would wrap an int32 accumulator.

Ground truth is plain Python integers (unbounded), built independently of the code under test;
every case runs on the compiled CPU kernel and on the pure-PyTorch reference
(``use_reference(True)``, what ``APPMULT_FX_REFERENCE=1`` sets at import).
"""

import sys

import pytest
import torch
from torch import nn

import appmult_fx as amx
from appmult_fx.ops.conv_gemm import approx_conv2d
from appmult_fx.ops.dispatch import use_reference
from appmult_fx.ops.lut_gemm import approx_bmm, int32_safe_k, lut_bmm, lut_sum

INT32_MAX = 2**31 - 1


@pytest.fixture(params=["kernel", "reference"])
def path(request):
    previous = use_reference(request.param == "reference")
    yield request.param
    use_reference(previous)


def _python_sums(a, w, table):
    """``SUM_k T[a, w]`` with Python ints (no overflow possible)."""
    a, w, t = a.tolist(), w.tolist(), table.tolist()
    return [
        [
            [sum(t[row[k]][w[b][k][j]] for k in range(len(row))) for j in range(len(w[b][0]))]
            for row in a[b]
        ]
        for b in range(len(a))
    ]


def _huge_table(bits: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = 1 << bits
    table = torch.randint(-(2**31), 2**31 - 1, (n, n), generator=g, dtype=torch.int64)
    table[0, 0] = -(2**31)  # the most negative entry: |T| exceeds int32 by itself
    return table.to(torch.int32)


def test_linear_40000_ones_exact_8bit_does_not_wrap(path) -> None:
    """``Linear(40000, 1)`` of ones on the exact 8-bit multiplier: the LUT sum is
    40000 * 255 * 255 = 2_601_000_000 > 2**31; the output must be ~39999, not -26052."""
    k = 40000
    lin = nn.Linear(k, 1)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(-1.0)
    gm = amx.convert(nn.Sequential(lin), amx.Spec().set_global("mul8u_exact"))
    x = torch.ones(2, k)
    amx.calibrate(gm, [x])
    out = gm.eval()(x)
    # independent statement: codes 255 with scale float32(1/255), exact integer sum
    s = float(torch.tensor(1.0 / 255, dtype=torch.float32))
    expect = torch.tensor(k * 255 * 255 * s * s, dtype=torch.float32) - 1.0
    assert out.shape == (2, 1)
    assert torch.equal(out, expect.expand(2, 1)), (out, expect)
    assert abs(float(out[0, 0]) - 39999.0) < 1e-2


@pytest.mark.parametrize("k", [8, 9, 16, 33, 64])
def test_huge_table_sums_equal_python_ints(path, k) -> None:
    """Entries near +-2**31 wrap an int32 sum from K=2 on; lut_sum must equal Python ints."""
    table = _huge_table(4, k)
    g = torch.Generator().manual_seed(100 + k)
    a = torch.randint(0, 16, (2, 3, k), generator=g, dtype=torch.uint8)
    w = torch.randint(0, 16, (2, k, 4), generator=g, dtype=torch.uint8)
    expect = torch.tensor(_python_sums(a, w, table), dtype=torch.int64)
    got = lut_sum(a, w, table)
    assert got.dtype == torch.int64
    assert torch.equal(got, expect)
    codes = approx_bmm(a.float(), w.float(), table, None, None)
    assert torch.equal(codes, expect.to(torch.float32))  # one correctly rounded conversion


def test_huge_table_conv_equals_python_ints(path) -> None:
    table = _huge_table(4, 7)
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 16, (1, 4, 3, 3), generator=g).float()
    w = torch.randint(0, 16, (2, 4, 2, 2), generator=g).float()
    out = approx_conv2d(x, w, table, None, None, [1, 1], [1, 1], 1)  # K = 4*2*2 = 16
    t = table.tolist()
    for o in range(2):
        for i in range(2):
            for j in range(2):
                s = sum(
                    t[int(x[0, c, i + di, j + dj])][int(w[o, c, di, dj])]
                    for c in range(4)
                    for di in range(2)
                    for dj in range(2)
                )
                assert out[0, o, i, j] == torch.tensor(s, dtype=torch.int64).float(), (o, i, j)


def test_exact_8bit_past_the_int32_bound_is_split_exactly(path) -> None:
    """K just past 33,025 with all codes 255: one int32 sum would wrap, split-K must not."""
    table = amx.multiplier("mul8u_exact").table
    assert int32_safe_k(table) == INT32_MAX // (255 * 255) == 33025
    k = 33026 + 17
    a = torch.full((1, 1, k), 255, dtype=torch.uint8)
    w = torch.full((1, k, 2), 255, dtype=torch.uint8)
    got = lut_sum(a, w, table)
    assert got.dtype == torch.int64
    assert torch.equal(got, torch.full((1, 1, 2), k * 65025, dtype=torch.int64))
    within = lut_sum(a[:, :, :33025], w[:, :33025], table)  # one int32 call suffices
    assert within.dtype == torch.int32 and within[0, 0, 0].item() == 33025 * 65025


def test_int32_op_refuses_a_sum_that_may_wrap(path) -> None:
    table = amx.multiplier("mul8u_exact").table
    a = torch.zeros(1, 1, 33026, dtype=torch.uint8)
    w = torch.zeros(1, 33026, 1, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="max\\|T\\| x K must fit int32.*lut_sum"):
        lut_bmm(a, w, table)
    assert lut_bmm(a[:, :, :33025], w[:, :33025], table).item() == 0  # within the bound: runs


@pytest.mark.parametrize(
    "entries",
    [
        [-(2**31), 0, 5, 7],  # the int32 minimum: |T| = 2**31 does not fit int32 itself
        [2**31 - 1, -3, 0, 1],
        [-40000, 39999, 0, 0],  # the peak is the most negative entry
        [0, 0, 0, 0],
    ],
)
def test_int32_safe_k_bounds_the_largest_magnitude(entries) -> None:
    """``int32_safe_k`` against the bound computed from Python integers: ``floor((2**31 - 1) /
    max|T|)``, at least 1, unbounded for a zero table; a too-large K from it would let a sum
    wrap."""
    table = torch.tensor(entries, dtype=torch.int32).reshape(2, 2)
    peak = max(abs(v) for v in entries)
    want = max(1, INT32_MAX // peak) if peak else sys.maxsize
    assert int32_safe_k(table) == want
    if peak:
        assert int32_safe_k(table) * peak <= INT32_MAX or int32_safe_k(table) == 1
