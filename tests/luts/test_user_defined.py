"""User-defined multipliers: Python callables and C/C++ sources (compiled, cached)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from appmult_fx.luts.registry import multiplier
from appmult_fx.luts.user_defined import cache_dir, from_c_source, from_function


def test_vectorised_and_scalar_functions() -> None:
    fast = from_function(lambda a, b: a * b, 8, signed=True)
    assert fast.provenance["evaluation"] == "vectorized"
    assert torch.equal(fast.table, multiplier("mul8s_exact").table)

    def clipped(a: int, b: int) -> int:  # scalar-only code: `if` on an array fails
        return min(a * b, 40) if a > 1 else 0

    slow = from_function(clipped, 4)
    assert slow.name == "clipped" and slow.provenance["evaluation"] == "elementwise"
    v = np.arange(16)
    expected = np.where(v[:, None] > 1, np.minimum(v[:, None] * v[None, :], 40), 0)
    assert np.array_equal(slow.table.numpy(), expected)
    assert torch.equal(
        from_function(lambda a, b: np.round(a * b / 2) * 2.0, 3).table,
        torch.tensor((v[:8, None] * v[None, :8] / 2).round() * 2, dtype=torch.int32),
    )


def test_function_errors() -> None:
    with pytest.raises(ValueError, match=r"must return integers; f\(0, 1\) = 0.5"):
        from_function(lambda a, b: (a + b) / 2, 3)
    with pytest.raises(ValueError, match="bits must be an integer in"):
        from_function(lambda a, b: a * b, 9)


EVO_STYLE = """
#include <stdint.h>
uint16_t mul4u_keep3(uint8_t A, uint8_t B) { return (uint16_t)((A & 0xE) * B); }
int16_t mul4s_plain(int8_t A, int8_t B) { return (int16_t)(A * B); }
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("APPMULT_FX_CACHE_DIR", str(tmp_path / "cache"))
    return cache_dir()


def test_c_source_with_evoapprox_signatures(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "evo.c"
    src.write_text(EVO_STYLE)
    unsigned = from_c_source(src, 4, symbol="mul4u_keep3")
    v = np.arange(16)
    assert np.array_equal(unsigned.table.numpy(), (v[:, None] & 0xE) * v[None, :])
    signed = from_c_source(src, 4, signed=True, symbol="mul4s_plain")
    assert torch.equal(signed.table, multiplier("mul4s_exact").table)
    assert signed.name == "mul4s_plain" and signed.provenance["symbol"] == "mul4s_plain"
    programs = sorted(cache.glob("mul4*"))
    assert len(programs) == 2
    stamp = programs[0].stat().st_mtime_ns
    from_c_source(src, 4, symbol="mul4s_plain", signed=True)  # cached: no rebuild
    from_c_source(src, 4, symbol="mul4u_keep3")
    assert programs[0].stat().st_mtime_ns == stamp and len(list(cache.glob("mul4*"))) == 2


def test_cpp_source_default_symbol(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "m.cpp"
    src.write_text(
        "#include <algorithm>\n"
        "long long approx_mul(long long a, long long b) { return std::max(a * b - 1, 0LL); }\n"
    )
    mult = from_c_source(src, 8, name="minus_one")
    assert mult.name == "minus_one"
    assert torch.equal(mult.table, (multiplier("mul8u_exact").table - 1).clamp(min=0))


def test_c_source_errors(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "bad.c"
    src.write_text("long long approx_mul(long long a, long long b) { return a * ; }\n")
    with pytest.raises(ValueError, match=r"compiling .*bad.c \(function 'approx_mul'\) failed"):
        from_c_source(src, 4)
    good = tmp_path / "good.c"
    good.write_text("long long approx_mul(long long a, long long b) { return a * b; }\n")
    with pytest.raises(ValueError, match="no function 'mul8u_nope' defined"):
        from_c_source(good, 4, symbol="mul8u_nope")
    with pytest.raises(ValueError, match="C identifier"):
        from_c_source(good, 4, symbol="x; system")
    with pytest.raises(FileNotFoundError):
        from_c_source(tmp_path / "missing.c", 4)
    with pytest.raises(ValueError, match=r"expected a C \(.c\) or C\+\+"):
        txt = tmp_path / "m.txt"
        txt.write_text("")
        from_c_source(txt, 4)
