"""C/C++ multipliers: operands bound by name, signed results, widths, and attacks on the
compile-and-run path (crashing functions, odd paths, compiler commands with flags)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from appmult_fx.luts.c_source import cache_dir, from_c_source


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("APPMULT_FX_CACHE_DIR", str(tmp_path / "cache"))
    return cache_dir()


def _src(tmp_path: Path, text: str, name: str = "m.c") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parameters_named_b_then_a_are_bound_by_name(tmp_path: Path) -> None:
    """EvoApproxLib's ``f(const uint64_t B, const uint64_t A)``: row = A whatever the order."""
    src = _src(tmp_path, "#include <stdint.h>\nuint64_t f(const uint64_t B, const uint64_t A)"
               " { return 3 * A + B; }\n")  # fmt: skip
    m = from_c_source(src, 4, symbol="f")
    v = np.arange(16)
    assert np.array_equal(m.table.numpy(), 3 * v[:, None] + v[None, :])
    assert m.provenance["operands"] == "by name (B, A)"
    # lower case names too; other names go by position; operands= overrides
    src2 = _src(tmp_path, "long long g(long long b, long long a) { return 3 * a + b; }\n"
                "long long h(long long x, long long y) { return 3 * x + y; }\n", "g.c")  # fmt: skip
    assert torch.equal(from_c_source(src2, 4, symbol="g").table, m.table)
    positional = from_c_source(src2, 4, symbol="h")
    assert torch.equal(positional.table, m.table)
    assert positional.provenance["operands"] == "by position (x = A, y = B)"
    swapped = from_c_source(src2, 4, symbol="h", operands=("y", "x"))
    assert torch.equal(swapped.table, m.table.T)
    assert torch.equal(from_c_source(src2, 4, symbol="h", operands=(1, 0)).table, m.table.T)
    with pytest.raises(ValueError, match="must name both parameters"):
        from_c_source(src2, 4, symbol="h", operands=("x", "z"))


def test_rectangular_and_signed_results(tmp_path: Path) -> None:
    src = _src(
        tmp_path,
        "#include <stdint.h>\n"
        "uint64_t r(uint64_t A, uint64_t B) { return A * B; }\n"
        "uint16_t s(uint8_t A, uint8_t B) { return (uint16_t)((int8_t)A * (int8_t)B); }\n",
    )
    rect = from_c_source(src, (8, 4), symbol="r")
    assert rect.bits == (8, 4) and tuple(rect.table.shape) == (256, 16)
    assert int(rect.table[255, 13]) == 255 * 13
    signed = from_c_source(src, 8, signed=True, symbol="s")  # uint16_t codes of signed products
    assert int(signed.product(torch.tensor(-3), torch.tensor(5))) == -15
    assert int(signed.product(torch.tensor(-128), torch.tensor(-128))) == 16384


def test_values_that_do_not_fit_the_output_are_refused(tmp_path: Path) -> None:
    src = _src(tmp_path, "long long f(long long a, long long b) { return a * b - 1; }\n")
    with pytest.raises(ValueError, match=r"table\[0\]\[0\] \(A=0, B=0\) = -1 does not fit"):
        from_c_source(src, 4, symbol="f")


def test_a_crashing_function_is_an_error_not_a_dead_interpreter(tmp_path: Path) -> None:
    src = _src(
        tmp_path,
        "long long boom(long long a, long long b) {\n"
        "  if (a == 3 && b == 2) { volatile int *p = 0; *p = 1; }\n  return a * b;\n}\n",
    )
    with pytest.raises(RuntimeError, match=r"boom\(\) in .*m\.c crashed with SIG(SEGV|BUS)"):
        from_c_source(src, 4, symbol="boom")
    hang = _src(tmp_path, "long long hang(long long a, long long b) { for (;;) {} }\n", "h.c")
    with pytest.raises(RuntimeError, match=r"hang\(\) .* did not finish"):
        from_c_source(hang, 2, symbol="hang", timeout=0.5)
    bye = _src(tmp_path, "#include <stdlib.h>\nlong long bye(long long a, long long b)"
               " { exit(0); }\n", "bye.c")  # fmt: skip
    with pytest.raises(RuntimeError, match=r"0 of 128 bytes written; did the function call exit"):
        from_c_source(bye, 2, symbol="bye")


def test_paths_with_quotes_and_spaces(tmp_path: Path) -> None:
    folder = tmp_path / 'my "approx" mults'
    folder.mkdir()
    src = _src(folder, "long long approx_mul(long long a, long long b) { return a * b; }\n",
               'odd name "x".c')  # fmt: skip
    m = from_c_source(src, 3)
    assert torch.equal(m.table, torch.outer(torch.arange(8), torch.arange(8)).int())


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_compiler_command_with_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _src(tmp_path, "long long approx_mul(long long a, long long b) { return a * b; }\n")
    monkeypatch.setenv("CC", "gcc -O0")
    assert int(from_c_source(src, 3).table[7, 7]) == 49
    assert int(from_c_source(src, 3, compiler="gcc -O0 -g").table[7, 6]) == 42
    monkeypatch.setenv("CC", "no-such-compiler -O2")
    with pytest.raises(FileNotFoundError, match="'no-such-compiler' not found"):
        from_c_source(src, 2)


def test_compile_errors_are_capped(tmp_path: Path) -> None:
    body = "long long approx_mul(long long a, long long b) { return a * ; }\n"
    src = _src(tmp_path, body + "int junk = ;\n" * 300)
    with pytest.raises(ValueError, match=r"compiling .*failed") as info:
        from_c_source(src, 2)
    assert len(str(info.value)) < 6000
