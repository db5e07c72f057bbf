"""Compiled kernel backends for the LUT-GEMM products (CPU C++ and CUDA).

``backend_for(device)`` returns an object with ``lut_bmm``, ``lut_bmm_grad_a`` and
``lut_bmm_grad_w`` (same signatures and results as :mod:`.reference`), or ``None`` when no
compiled kernel serves that device; the op layer registers these kernels per device with
torch.library (:mod:`.dispatch`), the reference serving every other device.

The C++/CUDA sources ship as package data (``appmult_fx.csrc``) and are compiled on first use
by :func:`compile_extension` (the one builder, also used by :mod:`.fp_kernels`) with
``torch.utils.cpp_extension.load`` into a cache folder keyed by a hash of the sources and their
folder, the torch and Python versions, the machine and the build options
(``APPMULT_FX_CACHE_DIR``, default ``~/.cache/appmult_fx``), so later processes load the built
module in well under a second.

Environment variables:

* ``APPMULT_FX_REFERENCE=1``: the ops keep their pure-PyTorch reference on every device (read
  once at import, see :mod:`.dispatch`).
* ``APPMULT_FX_CPU_ISA=auto|avx512|avx2|portable``: CPU instruction-set path (default ``auto``:
  the best this CPU has; ``avx512`` = AVX-512 VBMI/VNNI byte-permute forward and AVX-512
  table-rows gradients, ``avx2`` = AVX2+FMA table rows, ``portable`` = the compiler's baseline
  build).
* ``APPMULT_FX_CACHE_DIR``: where compiled modules are cached.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import logging
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from ..luts.cache import cache_root
from ..luts.indexing import MAX_BITS, MIN_BITS
from . import reference

CPU_SOURCES = (
    "lut_gemm_cpu.cpp",
    "lut_gemm_cpu_avx2.cpp",
    "lut_gemm_cpu_vbmi.cpp",
    "lut_gemm_cpu_avx512_grad.cpp",
    "lut_gemm_cpu_narrow.cpp",
    "lut_gemm_cpu_narrow_ops.cpp",
    "quantize_cpu.cpp",
    "rescale_cpu.cpp",
    "permute_cpu.cpp",
    "dead_runs_cpu.cpp",
    "lut_gemm_cpu_portable.cpp",
)
CPU_HEADERS = (
    "lut_gemm_cpu.h",
    "lut_gemm_cpu_kernels.h",
    "lut_gemm_cpu_avx512.h",
    "lut_gemm_cpu_narrow.h",
    "quantize_cpu.h",
    "rescale_cpu.h",
    "permute_cpu.h",
    "dead_runs_cpu.h",
    "channel_runs.h",
    "row_windows.h",
    "bit_limits.h",
)
CUDA_SOURCES = ("lut_gemm_cuda_binding.cpp", "lut_gemm_cuda.cu")
CUDA_HEADERS = ("lut_gemm_cuda.h", "lut_gemm_cuda_kernels.cuh", "cuda_launch.h", "bit_limits.h")
CUDA_ARCH_FLAGS = (
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
)
ISAS = ("auto", "avx512", "avx2", "portable")
# The operand-width rule of luts.indexing, compiled into every extension (cuda/bit_limits.h).
BIT_DEFINES = (f"-DAPPMULT_MIN_BITS={MIN_BITS}", f"-DAPPMULT_MAX_BITS={MAX_BITS}")


def source_dir() -> Path:
    """Folder holding the kernel sources (the ``appmult_fx.csrc`` package data)."""
    return Path(str(importlib.resources.files("appmult_fx.csrc")))


def cache_dir() -> Path:
    """Root folder of the compiled-module cache (:func:`appmult_fx.luts.cache.cache_root`)."""
    return cache_root()


def _module_name(prefix: str, files: tuple[str, ...], extra: str) -> str:
    """``prefix`` + a hash of the sources (names and contents), their folder, the torch and
    Python versions, the machine and the build options: one cache entry per distinct build.

    The folder is part of the key because the cached build files name the sources by path:
    two checkouts sharing one entry would make each other rebuild.
    """
    digest = hashlib.sha256(str(source_dir().resolve()).encode())
    for name in files:
        digest.update(name.encode())
        digest.update((source_dir() / name).read_bytes())
    key = f"{torch.__version__}|{sys.version}|{platform.machine()}|{extra}"
    digest.update(key.encode())
    return f"{prefix}_{digest.hexdigest()[:16]}"


def _no_cuda_runtime_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("No CUDA runtime is found")


def cpp_extension_module(cuda: bool) -> ModuleType:
    """``torch.utils.cpp_extension``; for a CPU build (``cuda=False``) imported without the
    ``No CUDA runtime is found, using CUDA_HOME=...`` notice it logs on machines without a GPU
    (it looks for a CUDA toolkit on import, which a CPU build never uses)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    if not cuda:
        logger.addFilter(_no_cuda_runtime_notice)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.removeFilter(_no_cuda_runtime_notice)
    return cpp_extension


def compile_extension(
    kind: str, prefix: str, sources: tuple[str, ...], headers: tuple[str, ...], **kwargs
) -> ModuleType:
    """Build (or load from :func:`cache_dir`) the extension of ``sources`` (the only builder
    of the int and FP kernels); ``kwargs`` go to ``torch.utils.cpp_extension.load``.

    Every build gets :data:`BIT_DEFINES`, the bit-width rule of :mod:`appmult_fx.luts.indexing`
    that the bindings' table checks use (``cuda/bit_limits.h``).
    """
    cuda = any(s.endswith(".cu") for s in sources)
    cpp_extension = cpp_extension_module(cuda=cuda)
    kwargs["extra_cflags"] = [*kwargs.get("extra_cflags", ()), *BIT_DEFINES]
    if cuda:
        kwargs["extra_cuda_cflags"] = [*kwargs.get("extra_cuda_cflags", ()), *BIT_DEFINES]

    name = _module_name(prefix, sources + headers, repr(sorted(kwargs.items())))
    build = cache_dir() / name
    build.mkdir(parents=True, exist_ok=True)
    if not (build / f"{name}.so").exists():
        print(
            f"appmult-fx: compiling the {kind} kernel (first use, ~1 min)...",
            file=sys.stderr,
            flush=True,
        )
    try:
        return cpp_extension.load(
            name=name,
            sources=[str(source_dir() / s) for s in sources],
            extra_include_paths=[str(source_dir())],
            build_directory=str(build),
            verbose=False,
            **kwargs,
        )
    except Exception as exc:  # compiler missing or failing: say how to run without kernels
        raise RuntimeError(
            f"appmult-fx: could not compile the {kind} kernel ({exc}); set "
            "APPMULT_FX_REFERENCE=1 to use the pure-PyTorch reference instead"
        ) from exc


@functools.cache
def cpu_extension() -> ModuleType:
    """The compiled CPU kernel module (built on first call, then cached on disk)."""
    return compile_extension(
        "CPU LUT-GEMM",
        "appmult_fx_cpu",
        CPU_SOURCES,
        CPU_HEADERS,
        extra_cflags=["-O3", "-fopenmp", "-fno-strict-aliasing"],
        extra_ldflags=["-fopenmp"],
    )


@functools.cache
def cuda_extension() -> ModuleType:
    """The compiled CUDA kernel module (built with nvcc on first call, then cached on disk)."""
    return compile_extension(
        "CUDA LUT-GEMM",
        "appmult_fx_cuda",
        CUDA_SOURCES,
        CUDA_HEADERS,
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3", *CUDA_ARCH_FLAGS],
    )


class CPUBackend:
    """CPU kernels; ``isa`` is ``"auto"``, ``"avx512"``, ``"avx2"`` or ``"portable"``."""

    def __init__(self, isa: str = "auto") -> None:
        if isa not in ISAS:
            raise ValueError(f"expected isa in {ISAS}, got {isa!r}")
        self.isa = isa
        self._ext = cpu_extension()

    def resolved_isa(self) -> str:
        """The instruction set this backend runs on this CPU."""
        return self._ext.resolve_isa(self.isa)

    def lut_bmm(self, a: Tensor, w: Tensor, table: Tensor) -> Tensor:
        """``Y = SUM_k table[a, w]`` (int32; sums wrap modulo 2**32 exactly like the reference)."""
        return self._ext.lut_bmm(a, w, table, self.isa)

    def lut_conv_sum(
        self,
        x: Tensor,
        w: Tensor,
        table: Tensor,
        kernel: Sequence[int],
        stride: Sequence[int],
        dilation: Sequence[int],
    ) -> Tensor | None:
        """``Y [1, N*Ho*Wo, O] = SUM_k table[im2col(x), w]`` (int32, as :meth:`lut_bmm` on the
        im2col matrix) for channels-last indices ``x [N, H, W, C]`` and ``w [1, kh*kw*C, O]``
        below the table's row and column counts (unchecked here, as in :meth:`lut_bmm`; the ops
        check them), by the AVX-512 kernels reading each window of ``x`` where it lies; ``None``
        where they do not serve (another instruction set, an activation side of at most 16
        codes against a wider weight side, a table that does not narrow to 16 bits)."""
        (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
        return self._ext.lut_conv_sum(x, w, table, kh, kw, sh, sw, dh, dw, self.isa)

    def lut_bmm_grad_a(
        self, g: Tensor, a: Tensor, w: Tensor, ga: Tensor, dead: Tensor | None = None
    ) -> Tensor:
        """``dA = SUM_n g * ga[a, w]`` (float32), 0 in the runs of 16 ``k`` that ``dead``
        (uint8 ``[B, M, ceil(K / 16)]``) flags: the AVX-512 kernel takes no dots there."""
        return self._ext.lut_bmm_grad_a(g, a, w, ga, self.isa, dead)

    def lut_bmm_grad_w(self, g: Tensor, a: Tensor, w: Tensor, gw: Tensor) -> Tensor:
        """``dW = SUM_m g * gw[a, w]`` (float32)."""
        return self._ext.lut_bmm_grad_w(g, a, w, gw, self.isa)


class CUDABackend:
    """CUDA kernels (shared-memory LUT tiles; see docs/kernels.md)."""

    def __init__(self) -> None:
        self._ext = cuda_extension()

    def lut_bmm(self, a: Tensor, w: Tensor, table: Tensor) -> Tensor:
        """``Y = SUM_k table[a, w]`` (int32; sums wrap modulo 2**32 exactly like the reference)."""
        return self._ext.lut_bmm(a, w, table)

    def lut_bmm_grad_a(
        self, g: Tensor, a: Tensor, w: Tensor, ga: Tensor, dead: Tensor | None = None
    ) -> Tensor:
        """``dA = SUM_n g * ga[a, w]`` (float32), 0 in the runs ``dead`` flags (computed,
        then zeroed: :func:`.reference.zero_dead_runs`)."""
        da = self._ext.lut_bmm_grad_a(g, a, w, ga)
        return da if dead is None else reference.zero_dead_runs(da, dead)

    def lut_bmm_grad_w(self, g: Tensor, a: Tensor, w: Tensor, gw: Tensor) -> Tensor:
        """``dW = SUM_m g * gw[a, w]`` (float32)."""
        return self._ext.lut_bmm_grad_w(g, a, w, gw)


@functools.cache
def _cpu_backend(isa: str) -> CPUBackend:
    return CPUBackend(isa)


@functools.cache
def _cuda_backend() -> CUDABackend:
    return CUDABackend()


def backend_for(device: torch.device) -> CPUBackend | CUDABackend | None:
    """The compiled backend for ``device`` (compiled on first use), or ``None`` (reference path).

    Raises RuntimeError when compilation fails (set ``APPMULT_FX_REFERENCE=1`` to avoid it).
    """
    if device.type == "cpu":
        return _cpu_backend(os.environ.get("APPMULT_FX_CPU_ISA", "auto"))
    if device.type == "cuda":
        return _cuda_backend()
    return None
