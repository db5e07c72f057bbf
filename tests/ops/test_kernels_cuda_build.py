"""CI compile check of the CUDA kernels: nvcc -c for sm_80 and sm_90 (no GPU needed); the FP
kernels through a small translation unit that instantiates their torch-free launchers."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appmult_fx.ops import kernels


def find_nvcc() -> str | None:
    """nvcc from CUDA_HOME, /usr/local/cuda or PATH (None when absent)."""
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def nvcc_compile(src: Path, out: Path, *flags: str) -> None:
    """``nvcc -c src`` for the CI architectures with warnings as errors (skip without nvcc)."""
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (set CUDA_HOME)")
    cmd = [nvcc, *flags, "-O3", "-Werror", "all-warnings", *kernels.CUDA_ARCH_FLAGS,
           "-I", str(kernels.source_dir()), "-c", str(src), "-o", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


def test_cuda_kernels_compile(tmp_path) -> None:
    nvcc_compile(kernels.source_dir() / "lut_gemm_cuda.cu", tmp_path / "k.o", "-std=c++17")


def test_fp_cuda_kernels_compile(tmp_path) -> None:
    src = tmp_path / "fp.cu"
    src.write_text(
        '#include "fp_lut_gemm_cuda_kernels.cuh"\n'
        "void* launchers[] = {reinterpret_cast<void*>(&appmult_fp::launch_fp_cast),\n"
        "                     reinterpret_cast<void*>(&appmult_fp::launch_fp_bmm)};\n"
    )
    nvcc_compile(src, tmp_path / "fp.o", "-std=c++20", "--fmad=false")
