"""The conv forward reading each window in place (``lut_conv_sum``): bit for bit the LUT-GEMM
reference over an im2col matrix gathered by torch, on every CPU path and kernel it reaches."""

from __future__ import annotations

import pytest
import torch

import appmult_fx as amx
from appmult_fx.ops import conv_gemm, kernels, reference
from appmult_fx.ops.conv_gemm import approx_conv2d, im2col_indices

# (N, C, H, W, kh, kw, sh, sw, dh, dw, O): channels below, at and past 8 (the 8-code runs of the
# row packing), strides, dilations, a 1x1 kernel, a window as large as the input, O past 16.
GEOMETRIES = [
    (2, 3, 9, 8, 3, 3, 1, 1, 1, 1, 5),
    (1, 8, 7, 9, 3, 2, 2, 1, 1, 2, 17),
    (3, 5, 10, 6, 2, 3, 1, 2, 2, 1, 9),
    (2, 16, 6, 6, 1, 1, 2, 2, 1, 1, 33),
    (1, 12, 5, 7, 5, 7, 1, 1, 1, 1, 4),
    (2, 64, 6, 5, 3, 3, 1, 1, 1, 1, 70),
    (2, 16, 18, 18, 3, 3, 1, 1, 1, 1, 130),  # 512 rows, 130 columns: blocks of 256 either way
]

# (rows, columns, entries, served): square 8-bit (256 planes), an 8x4 table (the narrow
# forward), 64 and 128 rows (one- and two-register planes); a 4x8 table (a narrow activation
# side) and a table past 16 bits (no narrowing) are not served (None: the caller's im2col path).
TABLES = [
    (256, 256, 20000, True),
    (256, 16, 3000, True),
    (64, 128, 9000, True),
    (128, 32, 9000, True),
    (16, 256, 3000, False),
    (256, 256, 2**30, False),
]


def _table(rows: int, cols: int, spread: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(-spread, spread, (rows, cols), generator=gen, dtype=torch.int32)


def _reference(nhwc, ib, table, kernel, stride, dilation) -> torch.Tensor:
    """The sums over the im2col matrix torch gathers (``im2col_indices``), by the reference."""
    ia = im2col_indices(nhwc.permute(0, 3, 1, 2), kernel, stride, dilation, 1)
    return reference.lut_bmm(ia.contiguous(), ib, table)


def _isas() -> list[str]:
    best = kernels.cpu_extension().best_isa()
    return {"portable": ["portable"], "avx2": ["portable", "avx2"]}.get(
        best, ["portable", "avx2", "avx512"]
    )


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_window_sums_equal_the_reference_over_im2col(isa: str) -> None:
    """The AVX-512 kernels serve the tables marked so, bit for bit the reference; every other
    case answers None (never a result of another path)."""
    if isa not in _isas():
        pytest.skip(f"this CPU lacks the {isa} instruction set")
    backend = kernels.CPUBackend(isa)
    gen = torch.Generator().manual_seed(0)
    for rows, cols, spread, served in TABLES:
        table = _table(rows, cols, spread, gen)
        for n, c, h, w, kh, kw, sh, sw, dh, dw, o in GEOMETRIES:
            nhwc = torch.randint(0, rows, (n, h, w, c), generator=gen, dtype=torch.uint8)
            ib = torch.randint(0, cols, (1, kh * kw * c, o), generator=gen, dtype=torch.uint8)
            kernel, stride, dilation = (kh, kw), (sh, sw), (dh, dw)
            got = backend.lut_conv_sum(nhwc, ib, table, kernel, stride, dilation)
            if not (served and isa == "avx512"):
                assert got is None, (isa, rows, cols, spread)
                continue
            want = _reference(nhwc, ib, table, kernel, stride, dilation)
            assert got.dtype == torch.int32 and torch.equal(got, want), (rows, cols, n, c, h, w)


def test_window_sums_skip_zero_rows_bit_for_bit() -> None:
    """Activations that are mostly zero (a ReLU's, and the padding) against a table whose zero
    row and a few others are all zero (or a few others only): where the forward runs its rows
    over the weights it skips each window's steps through those rows (the extension's counter
    shows it did, in blocks of 64, 128 and 256 weights); the sums stay the reference's."""
    if "avx512" not in _isas():
        pytest.skip("this CPU lacks the avx512 instruction set")
    backend = kernels.CPUBackend("avx512")
    gen = torch.Generator().manual_seed(1)
    skipped = 0
    for rows, cols, dead in [
        (256, 256, [0, 1, 255]),
        (128, 256, [5, 77]),
        (64, 128, [0, 63]),
        (256, 256, [3, 200]),
    ]:
        table = _table(rows, cols, 9000, gen)
        table[dead] = 0
        for n, c, h, w, kh, kw, sh, sw, dh, dw, o in GEOMETRIES + [
            (2, 8, 6, 6, 3, 3, 1, 1, 1, 1, 256)
        ]:
            codes = torch.randint(0, rows, (n, h, w, c), generator=gen, dtype=torch.uint8)
            zeros = torch.rand(n, h, w, c, generator=gen) < 0.7
            pick = torch.tensor(dead, dtype=torch.uint8)[codes.long() % len(dead)]
            nhwc = torch.where(zeros, pick, codes)
            ib = torch.randint(0, cols, (1, kh * kw * c, o), generator=gen, dtype=torch.uint8)
            kernel, stride, dilation = (kh, kw), (sh, sw), (dh, dw)
            before = kernels.cpu_extension().skip_counts()[0]
            got = backend.lut_conv_sum(nhwc, ib, table, kernel, stride, dilation)
            skipped += kernels.cpu_extension().skip_counts()[0] - before
            want = _reference(nhwc, ib, table, kernel, stride, dilation)
            assert torch.equal(got, want), (rows, cols, n, c, h, w)
    assert skipped >= 12  # the geometries with O >= 33 run over the weights, skipping


def test_window_sums_refuse_bad_geometry() -> None:
    backend = kernels.CPUBackend()  # the checks come before any instruction-set decision
    nhwc = torch.zeros(1, 4, 4, 2, dtype=torch.uint8)
    table = torch.zeros(16, 16, dtype=torch.int32)
    ib = torch.zeros(1, 18, 3, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="larger than the input"):
        backend.lut_conv_sum(nhwc, ib, table, (3, 3), (1, 1), (2, 2))
    with pytest.raises(RuntimeError, match=r"w \[1, 18, O\]"):
        backend.lut_conv_sum(nhwc, ib[:, :10], table, (3, 3), (1, 1), (1, 1))
    with pytest.raises(RuntimeError, match="channels-last"):
        backend.lut_conv_sum(nhwc.permute(0, 3, 1, 2), ib, table, (3, 3), (1, 1), (1, 1))


@pytest.mark.parametrize("name", ["mul8s_trunc8", "mul8x4s_trunc2", "mul7s_trunc7", "mul8u_drum4"])
def test_conv_reads_windows_in_place_and_matches_the_im2col_path(
    name: str, monkeypatch, kernels_active
) -> None:
    """``approx_conv2d`` takes the window path for one group on the CPU (no im2col matrix is
    gathered) and gives the same float32 output as with the im2col path forced."""
    if kernels.cpu_extension().best_isa() != "avx512":
        pytest.skip("this CPU lacks AVX-512 VBMI / VNNI: convs take the im2col path")
    mult = amx.multiplier(name)
    lo, hi = mult.operand_range_a
    wlo, whi = mult.operand_range_b
    gen = torch.Generator().manual_seed(1)
    qx = torch.randint(max(lo, 0), hi + 1, (2, 24, 12, 10), generator=gen).float()
    qw = torch.randint(wlo, whi + 1, (20, 24, 3, 3), generator=gen).float()
    im2col = conv_gemm.im2col_indices

    def refused(*args):  # noqa: ANN202
        raise AssertionError("the window path gathered an im2col matrix")

    monkeypatch.setattr(conv_gemm, "im2col_indices", refused)
    out = approx_conv2d(qx, qw, mult.table, None, None, [1, 2], [1, 1], 1)
    monkeypatch.setattr(conv_gemm, "im2col_indices", im2col)
    monkeypatch.setattr(conv_gemm, "_window_sums", lambda *args: None)
    assert torch.equal(out, approx_conv2d(qx, qw, mult.table, None, None, [1, 2], [1, 1], 1))


def test_window_path_refuses_indices_past_the_table(kernels_active) -> None:
    """The range check scans the channels-last indices: a code past a cut table's rows is
    refused, not read from the zero padding of the planes."""
    table = torch.zeros(16, 16, dtype=torch.int32)
    nhwc = torch.zeros(1, 16, 16, 16, dtype=torch.uint8)
    nhwc[0, 5, 5, 3] = 16
    ib = torch.zeros(1, 9 * 16, 4, dtype=torch.uint8)
    ix = nhwc.permute(0, 3, 1, 2)
    with pytest.raises(RuntimeError, match="below the table's 16 rows"):
        conv_gemm._window_sums(ix, ib, table, (3, 3), (1, 1), (1, 1))
