"""Multipliers from a user's netlist, Python function or C/C++ source file.

C/C++ contract: the file defines ``RESULT NAME(A_TYPE a, B_TYPE b)`` with integer types
(e.g. ``long long approx_mul(long long a, long long b)``, or EvoApproxLib's
``uint16_t mul8u_2AC(uint8_t A, uint8_t B)`` / ``int16_t mul8s_1KV6(int8_t A, int8_t B)``).
It is compiled with the system compiler (``$CC``/``cc`` for ``.c``, ``$CXX``/``c++``
otherwise) together with a small wrapper that calls it on every operand pair (signed
multipliers get signed operand values); the shared library is cached under
``$APPMULT_FX_CACHE`` (default ``~/.cache/appmult_fx``) by a hash of the source, the wrapper
and the compiler command. Headers the source includes are not part of the hash.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .indexing import check_bits, operand_values
from .multiplier import Multiplier
from .netlist_import import from_netlist as from_netlist  # re-exported: the public home

_C_SUFFIXES = {".c"}
_CXX_SUFFIXES = {".cc", ".cpp", ".cxx", ".C", ".c++"}
_WRAPPER = """
#include "{source}"
{extern} void appmult_fx_tabulate(long long *out, long long bits, long long is_signed) {{
    long long n = 1LL << bits;
    for (long long i = 0; i < n; ++i) {{
        long long a = (is_signed && i >= n / 2) ? i - n : i;
        for (long long j = 0; j < n; ++j) {{
            long long b = (is_signed && j >= n / 2) ? j - n : j;
            out[i * n + j] = (long long)({symbol}(a, b));
        }}
    }}
}}
"""


def _check_integral(values: np.ndarray, a: np.ndarray, b: np.ndarray, what: str) -> np.ndarray:
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    if values.dtype.kind != "f":
        raise TypeError(f"{what} must return integers, got dtype {values.dtype}")
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        i = np.flatnonzero(bad.reshape(-1))[0]
        raise ValueError(
            f"{what} must return integers; f({int(a.reshape(-1)[i])}, {int(b.reshape(-1)[i])}) "
            f"= {float(values.reshape(-1)[i])!r}"
        )
    return values.astype(np.int64)


def from_function(
    f: Callable[[Any, Any], Any], bits: int, signed: bool = False, name: str | None = None
) -> Multiplier:
    """Tabulate ``f(a, b) -> int`` over all operand values.

    ``f`` is first called once with two broadcast int64 arrays (all pairs); if that raises or
    does not give one value per pair, it is called per pair with Python ints. The way used is
    recorded in ``provenance["evaluation"]``.
    """
    check_bits(bits)
    values = operand_values(bits, signed).numpy().astype(np.int64)
    a, b = np.meshgrid(values, values, indexing="ij")
    label = name or getattr(f, "__name__", "function")
    try:
        out = np.asarray(f(a, b))
        evaluation = "vectorized" if out.shape == a.shape else None
    except Exception:  # scalar-only code (if/int()/math.*) fails on arrays: go per pair
        evaluation = None
    if evaluation is None:
        evaluation = "elementwise"
        out = np.array([[f(int(x), int(y)) for y in values] for x in values])
    table = _check_integral(out, a, b, f"function {label!r}")
    if label == "<lambda>":
        label = "lambda"
    provenance = {"source": "function", "function": repr(f), "evaluation": evaluation}
    return Multiplier(label, bits, signed, table, provenance=provenance)


def cache_dir() -> Path:
    """Where compiled C/C++ multipliers are cached (``$APPMULT_FX_CACHE`` or ~/.cache)."""
    root = os.environ.get("APPMULT_FX_CACHE") or Path.home() / ".cache" / "appmult_fx"
    return Path(root) / "c_multipliers"


def _compile(source: Path, symbol: str, compiler: str | None) -> Path:
    cxx = source.suffix in _CXX_SUFFIXES
    if not cxx and source.suffix not in _C_SUFFIXES:
        raise ValueError(f"{source}: expected a C (.c) or C++ (.cc/.cpp/.cxx) source file")
    compiler = compiler or os.environ.get("CXX" if cxx else "CC") or ("c++" if cxx else "cc")
    wrapper = _WRAPPER.format(
        source=str(source.resolve()).replace("\\", "\\\\").replace('"', '\\"'),
        extern='extern "C"' if cxx else "",
        symbol=symbol,
    )
    flags = ["-O2", "-shared", "-fPIC", "-Wl,-z,defs", "-x", "c++" if cxx else "c"]
    if not cxx:
        flags.append("-Werror=implicit-function-declaration")
    key = hashlib.sha256(
        "\0".join([wrapper, source.read_text(errors="replace"), compiler, *flags]).encode()
    ).hexdigest()[:32]
    lib = cache_dir() / f"{symbol}-{key}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wrapper_path = Path(tmp) / ("wrapper.cpp" if cxx else "wrapper.c")
        wrapper_path.write_text(wrapper)
        out = Path(tmp) / "lib.so"
        cmd = [compiler, *flags, str(wrapper_path), "-o", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"compiler {compiler!r} not found (set $CC / $CXX)") from exc
        if proc.returncode != 0:
            if not re.search(rf"\b{re.escape(symbol)}\s*\(", source.read_text(errors="replace")):
                raise ValueError(f"{source}: no function {symbol!r} defined in the source")
            raise ValueError(
                f"compiling {source} (function {symbol!r}) failed:\n{' '.join(cmd)}\n"
                f"{proc.stderr.strip()}"
            )
        os.replace(out, lib)  # atomic: concurrent builds never see a half-written library
    return lib


def from_c_source(
    path: str | Path,
    bits: int,
    signed: bool = False,
    symbol: str = "approx_mul",
    name: str | None = None,
    compiler: str | None = None,
) -> Multiplier:
    """Compile a C/C++ function ``symbol(a, b)`` and tabulate it over all operand values."""
    path = Path(path)
    check_bits(bits)
    if not path.is_file():
        raise FileNotFoundError(f"C/C++ source {path} not found")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", symbol):
        raise ValueError(f"symbol must be a C identifier, got {symbol!r}")
    lib = ctypes.CDLL(str(_compile(path, symbol, compiler)))
    tabulate = lib.appmult_fx_tabulate
    tabulate.restype = None
    tabulate.argtypes = [ctypes.POINTER(ctypes.c_longlong), ctypes.c_longlong, ctypes.c_longlong]
    n = 1 << bits
    out = np.zeros(n * n, dtype=np.int64)
    tabulate(out.ctypes.data_as(ctypes.POINTER(ctypes.c_longlong)), bits, int(signed))
    provenance = {"source": "c", "path": str(path), "symbol": symbol}
    return Multiplier(name or symbol, bits, signed, out.reshape(n, n), provenance=provenance)
