"""Compiled FP LUT-GEMM kernels (CPU C++ with OpenMP, CUDA), built on first use.

``backend_for(device)`` returns a module with ``fp_bmm(a, b, table, m, rounding)`` (same
signature and bit-identical results as :mod:`.fp_reference`) or ``None`` when no compiled
kernel serves the device. Sources are ``cuda/fp_lut_gemm_*`` (package data
``appmult_fx.csrc``); builds are cached beside the integer kernels' (see :mod:`.kernels`:
``APPMULT_FX_CACHE_DIR``).
"""

from __future__ import annotations

import functools
import hashlib
import sys
from types import ModuleType

import torch

from .kernels import CUDA_ARCH_FLAGS, cache_dir, cpp_extension_module, source_dir

CPU_FILES = ("fp_lut_gemm_cpu.cpp", "fp_lut_gemm_common.h")
CUDA_FILES = (
    "fp_lut_gemm_cuda.cu",
    "fp_lut_gemm_common.h",
    "fp_lut_gemm_cuda_kernels.cuh",
    "cuda_launch.h",
)


def _build(kind: str, files: tuple[str, ...], **kwargs) -> ModuleType:  # noqa: ANN003
    cpp_extension = cpp_extension_module(cuda=kind == "CUDA")
    digest = hashlib.sha256(f"{torch.__version__}|{sys.version}|{sorted(kwargs.items())}".encode())
    for name in files:
        digest.update((source_dir() / name).read_bytes())
    name = f"appmult_fx_fp_{kind.lower()}_{digest.hexdigest()[:16]}"
    build = cache_dir() / name
    build.mkdir(parents=True, exist_ok=True)
    if not (build / f"{name}.so").exists():
        print(
            f"appmult-fx: compiling the {kind} FP LUT-GEMM kernel (first use)...", file=sys.stderr
        )
    try:
        return cpp_extension.load(
            name=name,
            sources=[str(source_dir() / files[0])],
            extra_include_paths=[str(source_dir())],
            build_directory=str(build),
            verbose=False,
            **kwargs,
        )
    except Exception as exc:  # compiler missing or failing: say how to run without kernels
        raise RuntimeError(
            f"appmult-fx: could not compile the {kind} FP LUT-GEMM kernel ({exc}); set "
            "APPMULT_FX_REFERENCE=1 to use the pure-PyTorch reference instead"
        ) from exc


@functools.cache
def cpu_extension() -> ModuleType:
    """The compiled CPU FP kernel module."""
    return _build(
        "CPU",
        CPU_FILES,
        extra_cflags=["-O3", "-fopenmp", "-fno-fast-math"],
        extra_ldflags=["-fopenmp"],
    )


@functools.cache
def cuda_extension() -> ModuleType:
    """The compiled CUDA FP kernel module."""
    return _build(
        "CUDA",
        CUDA_FILES,
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
