"""Host-emulated build of the CUDA kernel sources, loaded with ctypes (see cuda/cuda_host_shim.h).

The device code of ``cuda/*.cuh`` and the host launchers of ``cuda/lut_gemm_cuda.cu`` compile as
C++ with ``-DAPPMULT_CUDA_HOST_EMULATION``: blocks run one after another, a block's threads run as
OS threads meeting at a barrier for ``__syncthreads``. :class:`EmulatedCUDA` mirrors the torch
binding (``lut_gemm_cuda_binding.cpp``, ``fp_lut_gemm_cuda.cu``) on CPU tensors, so the parity
checks written for the real backends run on it unchanged.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from appmult_fx.ops import kernels

HARNESS = Path(__file__).resolve().parent / "emulated_kernels.cpp"
FILES = (
    "lut_gemm_cuda.cu",
    "lut_gemm_cuda.h",
    "lut_gemm_cuda_kernels.cuh",
    "fp_lut_gemm_cuda_kernels.cuh",
    "fp_lut_gemm_common.h",
    "cuda_launch.h",
    "cuda_host_shim.h",
)
FLAGS = (
    "-std=c++20",
    "-O2",
    "-fPIC",
    "-shared",
    "-pthread",
    "-DAPPMULT_CUDA_HOST_EMULATION",
    "-fno-strict-aliasing",
    "-ffp-contract=off",
    "-Wall",
    "-Wextra",
    "-Wno-unknown-pragmas",
    "-Werror",
)  # fmm: no fused multiply-adds beyond the kernels' explicit fmaf, as with nvcc --fmad=false


def compiler() -> str | None:
    """The C++ compiler used for the emulated build (``CXX`` or g++), or None when absent."""
    return shutil.which(os.environ.get("CXX", "g++"))


def build(src_dir: Path, out_dir: Path) -> Path:
    """Compile the emulated library from ``src_dir`` into ``out_dir`` (cached by source hash)."""
    digest = hashlib.sha256(" ".join(FLAGS).encode())
    for path in [src_dir / name for name in FILES] + [HARNESS]:
        digest.update(path.name.encode() + path.read_bytes())
    lib = out_dir / f"emulated_cuda_{digest.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    cmd = [
        compiler() or "g++",
        *FLAGS,
        f"-I{src_dir}",
        "-x",
        "c++",
        str(src_dir / "lut_gemm_cuda.cu"),
        "-x",
        "c++",
        str(HARNESS),
        "-o",
        tmp,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(f"emulated CUDA build failed:\n{result.stderr}")
    os.replace(tmp, lib)
    return lib


def default_library() -> Path:
    """The emulated library built from the package's own kernel sources."""
    return build(kernels.source_dir(), kernels.cache_dir() / "emulated_cuda")


GUARD = 4096  # elements of slack after every buffer: out-of-bounds accesses land there


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _padded(t: Tensor) -> Tensor:
    """A contiguous copy of ``t`` followed by GUARD elements of slack (out-of-bounds reads stay
    inside memory the test owns)."""
    buf = torch.zeros(t.numel() + GUARD, dtype=t.dtype)
    buf[: t.numel()] = t.reshape(-1)
    return buf[: t.numel()].view(t.shape)


class _Output:
    """A zero- (or NaN-) filled output followed by a sentinel-filled guard zone, checked after
    the launch: a kernel writing past the end of its output fails the test."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, fill: float = 0.0) -> None:
        n = 1
        for d in shape:
            n *= d
        self.buf = torch.full((n + GUARD,), fill, dtype=dtype)
        self.buf[n:] = 77
        self.n, self.tensor = n, self.buf[:n].view(shape)

    def checked(self) -> Tensor:
        """The output, after checking that the guard zone is untouched."""
        assert bool((self.buf[self.n :] == 77).all()), "kernel wrote past the end of its output"
        return self.tensor


class EmulatedCUDA:
    """The CUDA kernels run on the CPU through the host emulation, with the binding's logic.

    ``num_sms`` feeds the launchers' reduction split (132 = H100), ``wide_table`` forces the
    32-bit table path of the forward kernel.
    """

    def __init__(self, lib: Path, num_sms: int = 132, wide_table: bool = False) -> None:
        self._lib = ctypes.CDLL(str(lib))
        self.num_sms = num_sms
        self.wide_table = wide_table

    def _check(self, err: int, what: str) -> None:
        if err != 0:
            raise RuntimeError(f"emulated {what} launch failed with cudaError {err}")

    def lut_bmm(self, a: Tensor, w: Tensor, table: Tensor) -> Tensor:
        """``Y = SUM_k table[a, w]`` with the binding's 16-bit table staging."""
        a, w, table = _padded(a), _padded(w), _padded(table)
        bits_a, bits_b = (d.bit_length() - 1 for d in table.shape)
        wide = table.to(torch.int64)
        lo, hi = int(wide.min()), int(wide.max())
        table16 = hi - lo <= 65535 and not self.wide_table
        staged = _padded((wide - lo).to(torch.int32)) if table16 else table
        (b, m, k), n = a.shape, w.shape[2]
        y = _Output((b, m, n), torch.int32)
        err = self._lib.emu_lut_fwd(
            _ptr(a),
            _ptr(w),
            _ptr(staged),
            int(table16),
            ctypes.c_uint32(lo & 0xFFFFFFFF),
            bits_a,
            bits_b,
            b,
            m,
            k,
            n,
            self.num_sms,
            _ptr(y.tensor),
        )
        self._check(err, "lut_fwd")
        return y.checked()

    def _grad(self, fn: str, g: Tensor, a: Tensor, w: Tensor, gt: Tensor, shape) -> Tensor:
        g, a, w, gt = (_padded(t) for t in (g.float(), a, w, gt))
        (b, m, k), n = a.shape, w.shape[2]
        bits_a, bits_b = (d.bit_length() - 1 for d in gt.shape)
        out = _Output(tuple(shape), torch.float32)
        args = (bits_a, bits_b, b, m, k, n, self.num_sms)
        err = getattr(self._lib, fn)(_ptr(g), _ptr(a), _ptr(w), _ptr(gt), *args, _ptr(out.tensor))
        self._check(err, fn)
        return out.checked()

    def lut_bmm_grad_a(self, g: Tensor, a: Tensor, w: Tensor, ga: Tensor) -> Tensor:
        """``dA = SUM_n g * ga[a, w]``."""
        return self._grad("emu_lut_grad_a", g, a, w, ga, a.shape)

    def lut_bmm_grad_w(self, g: Tensor, a: Tensor, w: Tensor, gw: Tensor) -> Tensor:
        """``dW = SUM_m g * gw[a, w]``."""
        return self._grad("emu_lut_grad_w", g, a, w, gw, w.shape)

    def fp_cast(self, x: Tensor, m: int, rounding: str) -> Tensor:
        """``x`` (float32) cast to the (1, 8, m) format by the CUDA cast kernel."""
        x = _padded(x)
        out = _Output(tuple(x.shape), torch.float32, float("nan"))
        err = self._lib.emu_fp_cast(
            _ptr(x), _ptr(out.tensor), ctypes.c_int64(x.numel()), m, int(rounding == "nearest")
        )
        self._check(err, "fp_cast")
        return out.checked()

    def fp_bmm(self, a: Tensor, b: Tensor, table: Tensor, m: int, rounding: str) -> Tensor:
        """FP LUT-GEMM as ``fp_lut_gemm_cuda.cu`` computes it (unwritten outputs stay NaN)."""
        ac, bc = self.fp_cast(a, m, rounding), self.fp_cast(b, m, rounding)
        ac, bc, table = _padded(ac), _padded(bc), _padded(table.to(torch.int32))
        (bsz, rows, k), cols = a.shape, b.shape[2]
        out = _Output((bsz, rows, cols), torch.float32, float("nan"))
        err = self._lib.emu_fp_bmm(
            _ptr(ac), _ptr(bc), _ptr(table), bsz, rows, k, cols, m, _ptr(out.tensor)
        )
        self._check(err, "fp_bmm")
        return out.checked()
