"""``appmult-fx lut build|grad|info|list|plot`` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from appmult_fx.luts.formats import load_multiplier
from appmult_fx.luts.gradients import with_gradients
from appmult_fx.luts.registry import multiplier

from appmult_fx.cli import main


def test_build_from_seed_netlist_reproduces_gradient_file(
    shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shared / "appmults" / "evo_selected" / "mult7u"
    out = tmp_path / "06q.lut"
    args = ["lut", "build", str(folder / "mul7u_06Q_sop.blif"), "-o", str(out)]
    assert main([*args, "--window", "4", "--edge", "row"]) == 0
    assert "er=0.953979" in capsys.readouterr().out
    built, seed = load_multiplier(out), load_multiplier(folder / "mul7u_06Q_lutfp+bp_avg_4_4.txt")
    assert torch.equal(built.table, seed.table)
    assert torch.equal(torch.round(built.grad_a * 16) / 16, seed.grad_a)
    assert main(["lut", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mul7u_06Q" in text and "edge=row" in text and "wce" in text and "162" in text


def test_build_from_c_source_to_seed_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPMULT_FX_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "m.c"
    src.write_text("long long approx_mul(long long a, long long b) { return a * b; }\n")
    out = tmp_path / "m_lutfp.txt"
    assert main(["lut", "build", str(src), "--bits", "3", "--signed", "-o", str(out)]) == 0
    back = load_multiplier(out)
    assert (
        back.signed
        and back.has_gradients
        and torch.equal(back.table, multiplier("mul3s_exact").table)
    )
    assert main(["lut", "build", str(src), "-o", str(out)]) == 2  # --bits missing


def test_grad_list_and_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["lut", "grad", "mul6u_trunc3", "--window", "2", "--edge", "row"]) == 0
    out = tmp_path / "mul6u_trunc3_difference_w2_row.lut"
    assert load_multiplier(out).provenance["window"] == 2
    assert main(["lut", "grad", str(out), "--method", "ste", "-o", "ste.lut"]) == 0
    assert torch.equal(load_multiplier("ste.lut").grad_a, multiplier("mul6u_exact").grad_a)
    capsys.readouterr()
    assert main(["lut", "list"]) == 0
    listing = capsys.readouterr().out
    assert "mul8s_mitchell" in listing and "mul8u_drum4" in listing and "wce" in listing
    assert main(["lut", "plot", str(out), "-o", "map.png"]) == 0
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "error, grad_a, grad_b" in capsys.readouterr().out


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lut", "info", str(tmp_path / "missing.lut")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["lut", "info", "mul9u_nothing"]) == 2
    assert "unknown built-in multiplier" in capsys.readouterr().err
    bad = tmp_path / "bad_lutfp.txt"
    bad.write_text("LUT for approximate multiplier:\n0 0 x\n")
    assert main(["lut", "info", str(bad)]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err


def test_list_groups_rectangular_builtins_by_widths(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lut", "list"]) == 0
    listing = capsys.readouterr().out
    rows = [line.split()[0] for line in listing.splitlines() if line.startswith("mul")]
    assert "mul8u_trunc4" in rows and not [r for r in rows if "x" in r.split("_")[0]]
    assert "rectangular built-ins (812 names, A x B bits): 8x7, 8x6" in listing
    assert "lut list --bits 8x4" in listing
    assert main(["lut", "list", "--bits", "8x4"]) == 0
    listing = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in listing.splitlines() if line[:3] == "mul"}
    families = {"exact", "trunc", "bam", "optrunc", "mitchell", "drum"}
    assert {r.split("_")[1].rstrip("0123456789_") for r in rows} == families
    assert all(r.startswith(("mul8x4u_", "mul8x4s_")) for r in rows) and len(rows) == 22
    assert rows["mul8x4u_exact"][0] == "0" and float(rows["mul8x4u_trunc3"][0]) > 0  # er
    assert main(["lut", "list", "--bits", "8x8"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line[:3] == "mul"]
    assert rows and all(r.startswith(("mul8u_", "mul8s_")) for r in rows)
    assert main(["lut", "list", "--bits", "9x4"]) == 2
    assert "bits must be an integer in [2, 8], got 9" in capsys.readouterr().err
    assert main(["lut", "list", "--bits", "8x4", "--catalogue", "cat"]) == 2
    assert "drop it with --catalogue" in capsys.readouterr().err


def test_info_of_a_rectangular_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lut", "info", "mul8x4u_trunc2"]) == 0
    text = capsys.readouterr().out
    assert "format    8x4-bit unsigned, int" in text
    assert "gradients gradient_method=difference, edge=column, window=16, window_b=1" in text
    assert "MED / 2^12" in text and "window_b:" not in text
    assert main(["lut", "info", "mul8x8u_trunc2"]) == 2
    assert "use 'mul8u_trunc2'" in capsys.readouterr().err
    assert main(["lut", "info", "mul8x4u_optrunc4"]) == 2
    assert "t must be in [1, 3] for 8x4-bit operands" in capsys.readouterr().err


def test_grad_takes_one_window_per_axis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["lut", "grad", "mul8x4u_trunc3", "--window", "8x2"]) == 0
    back = load_multiplier(tmp_path / "mul8x4u_trunc3_difference_w8x2_column.lut")
    assert (back.provenance["window"], back.provenance["window_b"]) == (8, 2)
    expected = with_gradients(multiplier("mul8x4u_trunc3"), window=(8, 2))
    assert torch.equal(back.grad_a, expected.grad_a) and torch.equal(back.grad_b, expected.grad_b)
    # A zero window is the library's plain difference; a negative one and bad text are refused.
    assert main(["lut", "grad", "mul8x4u_trunc3", "--window", "8x0"]) == 0
    zero = load_multiplier(tmp_path / "mul8x4u_trunc3_difference_w8x0_column.lut")
    assert torch.equal(zero.grad_b, with_gradients(multiplier("mul8x4u_trunc3"), (8, 0)).grad_b)
    assert main(["lut", "grad", "mul8x4u_trunc3", "--window", "8x-1"]) != 0
    with pytest.raises(SystemExit):
        main(["lut", "grad", "mul8x4u_trunc3", "--window", "8y2"])


def test_a_closed_output_ends_quietly() -> None:
    """``appmult-fx lut list | head -1``: the reader closes the pipe early; the command ends
    with 141 (128 + SIGPIPE) and no error message, not ``[Errno 32] Broken pipe`` (or an
    ignored exception at exit, where the output fits the buffer until the last flush)."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "appmult_fx", "lut", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader goes away before the command has written anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Broken pipe" not in err and "Traceback" not in err, err


def test_build_refuses_options_that_contradict_the_source(
    shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--bits / --signed / --symbol that a built-in, LUT file or netlist cannot honour are
    refused (exit 2), never silently ignored; options that agree with the source pass."""
    out = tmp_path / "b.lut"
    lut = multiplier("mul6u_trunc2").save(tmp_path / "m.lut")
    blif = shared / "appmults" / "evo_selected" / "mult7u" / "mul7u_06Q_sop.blif"
    for source, extra, says in (
        ("mul8u_trunc4", ["--bits", "4", "--signed"], "--bits 4 contradicts this built-in"),
        ("mul8u_trunc4", ["--signed"], "--signed contradicts this built-in multiplier, which "
         "is 8-bit unsigned"),
        ("mul8u_trunc4", ["--bits", "8x4"], "--bits 8x4 contradicts"),
        ("mul8u_trunc4", ["--symbol", "f"], "--symbol names the function of a C/C++ source"),
        (str(lut), ["--bits", "4"], "--bits 4 contradicts this LUT file, which is 6-bit"),
        (str(lut), ["--signed"], "--signed contradicts this LUT file"),
        (str(blif), ["--bits", "8"], "--bits 8 contradicts this netlist, which is 7-bit"),
        ("fp_mbm7", ["--bits", "8"], "--bits does not apply to this built-in multiplier"),
    ):  # fmt: skip
        assert main(["lut", "build", source, *extra, "-o", str(out)]) == 2, extra
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, (source, extra)
        assert not out.exists()
    assert main(["lut", "build", "mul8s_trunc4", "--bits", "8", "--signed", "-o", str(out)]) == 0
    assert load_multiplier(out).signed and load_multiplier(out).bits == 8
    assert main(["lut", "info", "mul8u_trunc4", "--signed"]) == 2


def test_build_into_a_missing_folder_creates_it(tmp_path: Path) -> None:
    """As ``retrain --out`` does; the error named a temporary file before."""
    out = tmp_path / "missing" / "deeper" / "x.lut"
    assert main(["lut", "build", "mul6u_trunc2", "-o", str(out)]) == 0
    assert load_multiplier(out).name == "mul6u_trunc2"
    grad = tmp_path / "other" / "g.lut"
    assert main(["lut", "grad", str(out), "-o", str(grad)]) == 0 and grad.is_file()
