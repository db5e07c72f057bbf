"""Multipliers from a user's C/C++ source: operands bound by name, tabulated in a child process.

Contract: the file defines ``RESULT NAME(X_TYPE x, Y_TYPE y)`` with integer types, e.g.
``long long approx_mul(long long a, long long b)`` or EvoApproxLib's
``uint64_t mul8u_2AC(const uint64_t B, const uint64_t A)``. Operand A (the table's row, the
activation) goes to the parameter named ``A``/``a`` and B to ``B``/``b``, whatever their
order; parameters with other names are bound by position (first = A), and ``operands=``
overrides both. Signed multipliers get signed operand values (a ``uint8_t`` parameter then
receives the two's-complement code) and their result is read as the two's-complement value
of the ``bits_a + bits_b`` output bits, whatever the C return type (``uint16_t`` included).

The source is compiled (``compiler``, else ``$CC``/``cc`` for ``.c``, ``$CXX``/``c++``
otherwise; a command with flags such as ``"gcc -O0"`` is split like a shell would) together
with a small ``main`` that includes it (``-include``: any path works) and writes the table.
The executable is cached in ``c_multipliers`` under :func:`.cache.cache_root`
(``$APPMULT_FX_CACHE_DIR``, default ``~/.cache/appmult_fx``) by a hash of the source, the
wrapper and the command, and runs in a child process, so a crash in the user's function is an
error naming it, never a dead interpreter. Headers the source includes are not part of the
hash. An EvoApproxLib header comment block in the source gives the multiplier's ``hardware``
figures and the library's error figures (see :mod:`.evoapprox_header`), which the table must
agree with; a file named like EvoApproxLib gives the operand widths and signedness
(:mod:`.evoapprox_names`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .cache import cache_root
from .evoapprox_header import check_header, with_header
from .evoapprox_names import circuit_name, inferred_note, named_operands
from .indexing import output_range
from .multiplier import Multiplier

C_SUFFIXES = {".c"}
CXX_SUFFIXES = {".cc", ".cpp", ".cxx", ".C", ".c++"}
TIMEOUT_S = 60.0
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAIN = """
#include <stdio.h>
#include <stdlib.h>
int main(void) {{
    const long long na = 1LL << {bits_a}, nb = 1LL << {bits_b};
    long long *out = (long long *)malloc((size_t)(na * nb) * sizeof(long long));
    if (!out) return 3;
    for (long long i = 0; i < na; ++i) {{
        long long a = ({signed} && i >= na / 2) ? i - na : i;
        for (long long j = 0; j < nb; ++j) {{
            long long b = ({signed} && j >= nb / 2) ? j - nb : j;
            out[i * nb + j] = (long long)({symbol}({args}));
        }}
    }}
    if (fwrite(out, sizeof(long long), (size_t)(na * nb), stdout) != (size_t)(na * nb)) return 4;
    return fflush(stdout) == 0 ? 0 : 5;
}}
"""


def cache_dir() -> Path:
    """Where compiled C/C++ multipliers are cached (under :func:`.cache.cache_root`)."""
    return cache_root() / "c_multipliers"


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def parameter_names(source: str, symbol: str) -> list[str] | None:
    """The parameter names of ``symbol``'s definition in ``source`` (None if not found)."""
    m = re.search(rf"\b{re.escape(symbol)}\s*\(([^()]*)\)\s*\{{", _strip_comments(source))
    if m is None:
        return None
    names = []
    for param in m.group(1).split(","):
        words = _IDENT.findall(param.split("[")[0])
        if not words or words == ["void"]:
            return None
        names.append(words[-1])
    return names


def bind_operands(
    names: list[str] | None, operands: tuple[str | int, str | int] | None, symbol: str
) -> tuple[list[str], str]:
    """C call arguments (``a``/``b`` per parameter position) and how they were bound."""
    if operands is not None:
        if len(operands) != 2:
            raise ValueError(f"operands must be a pair (A's parameter, B's), got {operands!r}")
        if names is None:
            raise ValueError(f"operands=: the parameters of {symbol!r} could not be read")
        pos = [
            o if isinstance(o, int) else next((i for i, n in enumerate(names) if n == o), -1)
            for o in operands
        ]
        if len(names) != 2 or sorted(pos) != [0, 1]:
            raise ValueError(
                f"operands={operands!r} must name both parameters of {symbol}({', '.join(names)})"
            )
        args = ["", ""]
        args[pos[0]], args[pos[1]] = "a", "b"
        return args, f"operands={list(operands)}"
    if names is not None and len(names) != 2:
        raise ValueError(f"{symbol} takes {len(names)} parameters ({names}); expected 2")
    if names is not None and sorted(n.upper() for n in names) == ["A", "B"]:
        return [n.lower() for n in names], f"by name ({', '.join(names)})"
    if names is None:
        return ["a", "b"], "by position (first parameter = A; the signature could not be read)"
    return ["a", "b"], f"by position ({names[0]} = A, {names[1]} = B)"


def _compiler(source: Path, compiler: str | None) -> list[str]:
    cxx = source.suffix in CXX_SUFFIXES
    if not cxx and source.suffix not in C_SUFFIXES:
        raise ValueError(f"{source}: expected a C (.c) or C++ (.cc/.cpp/.cxx) source file")
    command = compiler or os.environ.get("CXX" if cxx else "CC") or ("c++" if cxx else "cc")
    words = shlex.split(command)
    if not words:
        raise ValueError(f"empty compiler command {command!r}")
    return words


def _build(source: Path, symbol: str, main: str, compiler: list[str]) -> Path:
    """Compile ``main`` (which calls ``symbol``) with ``source`` included; cached executable."""
    cxx = source.suffix in CXX_SUFFIXES
    flags = ["-O0", "-x", "c++" if cxx else "c"]  # compiling dominates: 2**16 calls are cheap
    if not cxx:
        flags.append("-Werror=implicit-function-declaration")
    text = source.read_text(errors="replace")
    key = hashlib.sha256("\0".join([main, text, *compiler, *flags]).encode()).hexdigest()[:32]
    exe = cache_dir() / f"{symbol}-{key}"
    if exe.exists():
        return exe
    exe.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wrapper = Path(tmp) / ("main.cpp" if cxx else "main.c")
        wrapper.write_text(main)
        out = Path(tmp) / "tabulate"
        # -include: the source is read as if #included first, whatever its path holds
        cmd = [compiler[0], *flags, *compiler[1:]]  # the user's flags (CC="gcc -O2") win
        cmd += ["-include", str(source.resolve()), str(wrapper), "-o", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"compiler {compiler[0]!r} not found (set $CC / $CXX)") from exc
        if proc.returncode != 0:
            if not re.search(rf"\b{re.escape(symbol)}\s*\(", _strip_comments(text)):
                raise ValueError(f"{source}: no function {symbol!r} defined in the source")
            log = proc.stderr.strip()
            log = log if len(log) <= 4000 else log[:4000] + f"\n... ({len(log)} characters)"
            raise ValueError(
                f"compiling {source} (function {symbol!r}) failed:\n{shlex.join(cmd)}\n{log}"
            )
        os.replace(out, exe)  # atomic: concurrent builds never see a half-written program
    return exe


def _run(exe: Path, source: Path, symbol: str, count: int, timeout: float) -> np.ndarray:
    """Run the tabulating program in a child process; its crash is an error naming ``symbol``."""
    try:
        proc = subprocess.run([str(exe)], capture_output=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"{symbol}() in {source} did not finish tabulating {count} operand pairs within "
            f"{timeout:g} s (an endless loop?); pass timeout= to allow longer"
        ) from exc
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise RuntimeError(
            f"{symbol}() in {source} crashed with {name} while being tabulated (the function "
            "itself, run in a child process: check array indices and pointers in it)"
        )
    if proc.returncode != 0 or len(proc.stdout) != 8 * count:
        err = proc.stderr.decode(errors="replace")[:500]
        raise RuntimeError(
            f"tabulating {symbol}() in {source} failed (exit status {proc.returncode}, "
            f"{len(proc.stdout)} of {8 * count} bytes written; did the function call exit()?)"
            + (f": {err}" if err else "")
        )
    return np.frombuffer(proc.stdout, dtype=np.int64).copy()


def signed_values(codes: np.ndarray, bits_a: int, bits_b: int) -> np.ndarray:
    """Results of a signed multiplier as the two's-complement value of its output bits.

    Values already in the signed output range stay; raw codes ``[2**(w-1), 2**w)`` (a
    ``uint16_t`` return of an 8x8 multiplier) become negative; anything else is left for the
    :class:`.Multiplier` to refuse with the entry named.
    """
    width = bits_a + bits_b
    lo, hi = output_range(bits_a, bits_b, True)
    raw = (codes > hi) & (codes < (1 << width))
    return np.where(raw, codes - (1 << width), codes)


def from_c_source(
    path: str | Path,
    bits: int | tuple[int, int] | None = None,
    signed: bool | None = None,
    symbol: str | None = None,
    name: str | None = None,
    compiler: str | None = None,
    operands: tuple[str | int, str | int] | None = None,
    timeout: float = TIMEOUT_S,
) -> Multiplier:
    """Compile a C/C++ function and tabulate ``table[a][b] = f(A=a, B=b)`` (module docstring).

    ``symbol`` defaults to the file stem when the source defines a function of that name
    (EvoApproxLib: ``mul8u_2AC.c`` defines ``mul8u_2AC``), else ``approx_mul``. ``bits`` is
    an int or ``(bits_a, bits_b)``, ``signed`` a bool; a file named like EvoApproxLib
    (``mul8x4u_2AN.c``) gives both when omitted and refuses values that contradict its name
    (:mod:`.evoapprox_names`), and a file whose header's error figures the table contradicts
    is refused (:func:`.evoapprox_header.check_header`). Without a name to go by, ``bits`` is
    required and ``signed`` defaults to False. ``operands`` names (or gives the positions of)
    the parameters receiving A and B.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"C/C++ source {path} not found")
    circuit = circuit_name(path.stem)
    widths, named_signed = named_operands(circuit, bits, signed)
    if widths is None:
        raise ValueError(
            f"{path.name}: operand widths unknown; pass bits= (an int or (bits_a, bits_b)), or "
            "name the file like EvoApproxLib (mul8u_..., mul8x4u_...)"
        )
    note = inferred_note(circuit, bits, signed)
    bits_a, bits_b = widths
    signed = bool(named_signed)
    command = _compiler(path, compiler)
    text = path.read_text(errors="replace")
    if symbol is None:
        stem_defined = _IDENT.fullmatch(path.stem) and parameter_names(text, path.stem)
        symbol = path.stem if stem_defined else "approx_mul"
    if not _IDENT.fullmatch(symbol):
        raise ValueError(f"symbol must be a C identifier, got {symbol!r}")
    args, binding = bind_operands(parameter_names(text, symbol), operands, symbol)
    main = _MAIN.format(
        bits_a=bits_a, bits_b=bits_b, signed=int(signed), symbol=symbol, args=", ".join(args)
    )
    exe = _build(path, symbol, main, command)
    codes = _run(exe, path, symbol, 1 << (bits_a + bits_b), timeout)
    table = signed_values(codes, bits_a, bits_b) if signed else codes
    provenance = {"source": "c", "path": str(path), "symbol": symbol, "operands": binding}
    try:
        mult = Multiplier(
            name or symbol,
            (bits_a, bits_b),
            signed,
            table.reshape(1 << bits_a, 1 << bits_b),
            provenance=provenance,
        )
        return check_header(with_header(mult, text), path.name)
    except ValueError as exc:  # entries that do not fit, a header the table contradicts
        if not note:
            raise
        raise type(exc)(f"{exc}{note}") from exc
