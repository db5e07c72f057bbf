"""Compiled FP LUT-GEMM kernels (CPU C++ with OpenMP, CUDA), built on first use.

``backend_for(device)`` returns a module with ``fp_bmm(a, b, table, m, rounding)`` (same
signature and bit-identical results as :mod:`.fp_reference`) or ``None`` when no compiled
kernel serves the device. Sources are ``cuda/fp_lut_gemm_*`` (package data
``appmult_fx.csrc``), built and cached by the integer kernels' builder
(:func:`.kernels.compile_extension`, ``APPMULT_FX_CACHE_DIR``).
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch

from .kernels import CUDA_ARCH_FLAGS, compile_extension

CPU_FILES = ("fp_lut_gemm_cpu.cpp", "fp_lut_gemm_common.h")  # the source, then its headers
CUDA_FILES = (
    "fp_lut_gemm_cuda.cu",
    "fp_lut_gemm_common.h",
    "fp_lut_gemm_cuda_kernels.cuh",
    "cuda_launch.h",
)


@functools.cache
def cpu_extension() -> ModuleType:
    """The compiled CPU FP kernel module."""
    return compile_extension(
        "CPU FP LUT-GEMM",
        "appmult_fx_fp_cpu",
        CPU_FILES[:1],
        CPU_FILES[1:],
        extra_cflags=["-O3", "-fopenmp", "-fno-fast-math"],
        extra_ldflags=["-fopenmp"],
    )


@functools.cache
def cuda_extension() -> ModuleType:
    """The compiled CUDA FP kernel module."""
    return compile_extension(
        "CUDA FP LUT-GEMM",
        "appmult_fx_fp_cuda",
        CUDA_FILES[:1],
        CUDA_FILES[1:],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3", "-std=c++20", "--fmad=false", *CUDA_ARCH_FLAGS],
    )


def backend_for(device: torch.device) -> ModuleType | None:
    """The compiled FP backend for ``device`` (built on first use), or ``None``."""
    if device.type == "cpu":
        return cpu_extension()
    if device.type == "cuda":
        return cuda_extension()
    return None
