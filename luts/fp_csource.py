"""Compile a C/C++ ``float f(float, float)`` and evaluate it on ``1.i x 1.j`` (ApproxTrain flow).

The user's source is compiled together with a small driver into a shared library (one call
fills the whole ``2**m x 2**m`` grid), loaded with :mod:`ctypes`, and the float32 products are
returned for :func:`.fp_models.entries_from_products`.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_DRIVER = """
#include <cstdint>
#include <cstring>
extern "C" void appmult_fx_tabulate(int m, float* out) {{
    const int n = 1 << m;
    for (int i = 0; i < n; ++i) {{
        for (int j = 0; j < n; ++j) {{
            uint32_t ua = (127u << 23) | (uint32_t(i) << (23 - m));
            uint32_t ub = (127u << 23) | (uint32_t(j) << (23 - m));
            float a, b;
            std::memcpy(&a, &ua, 4);
            std::memcpy(&b, &ub, 4);
            out[i * n + j] = (float)({function}(a, b));
        }}
    }}
}}
"""


def _source_text(source: str | Path) -> tuple[str, str]:
    if isinstance(source, Path) or (
        isinstance(source, str)
        and "\n" not in source
        and source.endswith((".c", ".cc", ".cpp", ".cxx", ".h", ".hpp"))
    ):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"C/C++ source {path} does not exist")
        return path.read_text(), str(path)
    return str(source), "<string>"


def tabulate_c_function(
    source: str | Path, function: str, m: int, compiler: str = "c++"
) -> tuple[torch.Tensor, dict[str, Any]]:
    """float32 ``[2**m, 2**m]`` values of ``function(1.i, 1.j)`` and a provenance record."""
    if not _IDENT.fullmatch(function):
        raise ValueError(f"function must be a C identifier, got {function!r}")
    exe = shutil.which(compiler)
    if exe is None:
        raise FileNotFoundError(f"C++ compiler {compiler!r} not found on PATH")
    text, origin = _source_text(source)
    with tempfile.TemporaryDirectory(prefix="appmult_fx_fp_") as tmp:
        src = Path(tmp) / "multiplier.cpp"
        lib = Path(tmp) / "multiplier.so"
        src.write_text(text + "\n" + _DRIVER.format(function=function))
        cmd = [exe, "-O2", "-std=c++17", "-shared", "-fPIC", "-x", "c++", str(src), "-o", str(lib)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"compiling {origin} failed ({' '.join(cmd)}):\n{proc.stderr.strip()}"
            )
        dll = ctypes.CDLL(str(lib))
        n = 1 << m
        out = torch.empty(n * n, dtype=torch.float32)
        dll.appmult_fx_tabulate.argtypes = [ctypes.c_int, ctypes.c_void_p]
        dll.appmult_fx_tabulate.restype = None
        dll.appmult_fx_tabulate(m, ctypes.c_void_p(out.data_ptr()))
    prov = {
        "source": "c-source",
        "origin": origin,
        "function": function,
        "compiler": compiler,
        "source_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    return out.reshape(n, n), prov
