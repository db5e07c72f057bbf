"""The CUDA kernel sources run on the CPU (host emulation, see cuda/cuda_host_shim.h) against the
pure-torch references: every product, bits 2..8, signed and unsigned, square and rectangular
tables, ragged shapes, the split (atomicAdd) and wide-table paths, the FP kernel; and faults
injected into a copy of the sources (dropped barriers, a dropped ragged-edge guard, a shifted
index) that the same checks catch."""

from __future__ import annotations

import ctypes
import shutil

import pytest
import torch
from appmult_fx.luts.fp_format import cast_bits

import appmult_fx as amx
from appmult_fx.ops import fp_reference, kernels, reference

from .cuda_emulation.emulated import FILES, EmulatedCUDA, build, compiler, default_library
from .test_fp_gemm import _operands as fp_operands
from .test_fp_gemm import _same_bits
from .test_kernels_cpu import (
    assert_float_product_close,
    check_backend,
    check_wraparound,
    make_operands,
    make_table,
)
from .test_kernels_rectangular import check_rectangular, rectangular_cases

pytestmark = pytest.mark.skipif(compiler() is None, reason="needs a C++20 compiler (g++)")


@pytest.fixture(scope="session")
def emulated_lib():
    """The emulated library of the package's CUDA sources (compiled once, cached by hash)."""
    return default_library()


def check_products(backend, shapes, bits_list=(7, 8)) -> None:
    """Forward exact and dA, dW within 1e-5 of the reference, on ``shapes``."""
    gen = torch.Generator().manual_seed(11)
    for bits in bits_list:
        table = make_table(bits, True, gen)
        ga = torch.randn(1 << bits, 1 << bits, generator=gen)
        gw = torch.randn(1 << bits, 1 << bits, generator=gen)
        for shape in shapes:
            a, w, g = make_operands(shape, bits, gen)
            y = backend.lut_bmm(a, w, table)
            assert torch.equal(y, reference.lut_bmm(a, w, table)), (bits, shape)
            da = backend.lut_bmm_grad_a(g, a, w, ga)
            assert_float_product_close(da, reference.lut_bmm_grad_a, g, a, w, ga)
            dw = backend.lut_bmm_grad_w(g, a, w, gw)
            assert_float_product_close(dw, reference.lut_bmm_grad_w, g, a, w, gw)


def test_every_product_bits_signedness_and_ragged_shape(emulated_lib) -> None:
    check_backend(EmulatedCUDA(emulated_lib), "cpu")


def test_forward_wraps_like_reference(emulated_lib) -> None:
    check_wraparound(EmulatedCUDA(emulated_lib), "cpu")


def test_wide_table_path_and_one_sm(emulated_lib) -> None:
    """The 32-bit forward table (read through __ldg), and a launcher that never splits."""
    check_products(EmulatedCUDA(emulated_lib, wide_table=True), [(2, 70, 45, 67)], (2, 5, 8))
    check_products(EmulatedCUDA(emulated_lib, num_sms=1), [(1, 65, 300, 9)], (6,))


def test_split_reductions(emulated_lib) -> None:
    """Long reductions over few output tiles split over gridDim.z and meet in atomicAdd."""
    shapes = [(1, 9, 300, 7), (1, 300, 20, 9), (1, 9, 20, 300), (2, 130, 290, 70)]
    check_products(EmulatedCUDA(emulated_lib, num_sms=132), shapes)


FP_CASES = [("fp_mbm3", "nearest"), ("fp_mit7", "truncate"), ("fp_trunc11", "truncate")]


@pytest.mark.parametrize(("name", "rounding"), FP_CASES)
def test_fp_kernel_bit_identical_to_reference(emulated_lib, name: str, rounding: str) -> None:
    """Shared-table (m <= 7) and global-table (m > 7) paths, specials, ragged tiles."""
    mult = amx.multiplier(name)
    t, m = mult.mantissa_table, mult.mantissa_bits
    emu = EmulatedCUDA(emulated_lib)
    a, b = fp_operands((2, 19, 37), (2, 37, 23), density=50)
    want_cast = cast_bits(a.view(torch.int32), m, rounding).view(torch.float32)
    assert _same_bits(emu.fp_cast(a, m, rounding), want_cast)
    want = fp_reference.fp_bmm(a, b, t, m, rounding)
    assert _same_bits(emu.fp_bmm(a, b, t, m, rounding), want)


# Faults injected into a copy of the sources; `appmult_fault` (set through ctypes) picks one.
FAULTS = {
    "forward drops the barrier after loading its tiles": (
        "lut_gemm_cuda_kernels.cuh",
        "    __syncthreads();\n    for (int t = 0; t < kc; ++t) {",
        "    if (appmult_fault != 1) __syncthreads();\n    for (int t = 0; t < kc; ++t) {",
    ),
    "grad_a drops the ragged-edge guard of its output": (
        "lut_gemm_cuda_kernels.cuh",
        "const int k = k0 + tx * kPer + j;\n      if (k >= K) continue;",
        "const int k = k0 + tx * kPer + j;\n      if (k >= K && appmult_fault != 2) continue;",
    ),
    "grad_w reads its A tile one column off": (
        "lut_gemm_cuda_kernels.cuh",
        "a[static_cast<int64_t>(mt + t) * K + k] & code_mask(bits_a) : 0;",
        "a[static_cast<int64_t>(mt + t) * K + k + (appmult_fault == 3)] & code_mask(bits_a) : 0;",
    ),
    "fp kernel drops the barrier before its tiles are overwritten": (
        "fp_lut_gemm_cuda_kernels.cuh",
        "    __syncthreads();\n  }\n  if (row < M && col < N)",
        "    if (appmult_fault != 4) __syncthreads();\n  }\n  if (row < M && col < N)",
    ),
}


@pytest.fixture(scope="session")
def faulty_lib(tmp_path_factory):
    """One emulated build of the sources with every fault behind a runtime switch."""
    src = tmp_path_factory.mktemp("faulty_src")
    for name in FILES:
        shutil.copy(kernels.source_dir() / name, src / name)
    launch = src / "cuda_launch.h"
    launch.write_text(launch.read_text() + '\nextern "C" {\ninline int appmult_fault = 0;\n}\n')
    for file, before, after in FAULTS.values():
        text = (src / file).read_text()
        assert text.count(before) == 1, f"fault site not found once in {file}: {before!r}"
        (src / file).write_text(text.replace(before, after))
    return build(src, kernels.cache_dir() / "emulated_cuda")


def test_faulty_build_is_correct_with_faults_off(faulty_lib) -> None:
    ctypes.c_int.in_dll(ctypes.CDLL(str(faulty_lib)), "appmult_fault").value = 0
    check_products(EmulatedCUDA(faulty_lib), [(1, 70, 300, 67), (1, 9, 20, 300)])


@pytest.mark.parametrize("fault", range(1, len(FAULTS) + 1), ids=list(FAULTS))
def test_injected_fault_fails_parity(faulty_lib, fault: int) -> None:
    switch = ctypes.c_int.in_dll(ctypes.CDLL(str(faulty_lib)), "appmult_fault")
    switch.value = fault
    try:
        emu = EmulatedCUDA(faulty_lib)
        with pytest.raises(AssertionError):
            if fault == 4:
                mult = amx.multiplier("fp_mbm7")
                a, b = fp_operands((1, 40, 130), (1, 130, 40), specials=False)
                t, m = mult.mantissa_table, mult.mantissa_bits
                assert _same_bits(
                    emu.fp_bmm(a, b, t, m, "truncate"), fp_reference.fp_bmm(a, b, t, m, "truncate")
                )
            else:
                check_products(emu, [(1, 70, 300, 67), (1, 9, 20, 300)])
    finally:
        switch.value = 0


RECT_WIDTHS = [(8, 4), (8, 2), (4, 8), (3, 7), (7, 3), (2, 8), (8, 7)]


def test_rectangular_tables(emulated_lib) -> None:
    """(2**bits_a, 2**bits_b) tables: signed and unsigned, 16-bit and wide forward tables,
    shared-memory and read-only-cache gradient tables (8 x 7 > 14 bits), ragged M, K, N."""
    shapes = [(1, 1, 1, 1), (2, 13, 31, 33), (1, 70, 45, 67)]
    check_rectangular(EmulatedCUDA(emulated_lib), rectangular_cases(RECT_WIDTHS, shapes))


def test_rectangular_split_and_wide_paths(emulated_lib) -> None:
    """The split (atomicAdd) reductions and the 32-bit forward table on rectangular tables."""
    cases = rectangular_cases([(8, 4), (3, 7)], [(1, 9, 300, 7), (1, 300, 20, 9)])
    check_rectangular(EmulatedCUDA(emulated_lib, num_sms=132), cases)
    check_rectangular(EmulatedCUDA(emulated_lib, wide_table=True), cases)
