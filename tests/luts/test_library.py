"""import_library / load_catalogue: a hand-made library tree with good, contradictory, broken
and lying circuits, and the EvoApproxLib sample against the test's own C harness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from appmult_fx.luts.catalogue import load_catalogue, read_catalogue
from appmult_fx.luts.format_errors import LutFormatError
from appmult_fx.luts.library import import_library
from appmult_fx.luts.registry import multiplier

from appmult_fx.cli import main

from .test_evoapprox_c import truth

HEADER = """// MAE% = {mae_pct} %
// MAE = {mae}
// WCE% = 0.00 %
// WCE = 0
// EP% = 0.00 %
// PDK45_PWR = {power} mW
// PDK45_AREA = 12.5 um2
// PDK45_DELAY = 0.21 ns
#include <stdint.h>
"""
C_EXACT = "uint64_t {name}(const uint64_t B, const uint64_t A) {{ return A * (B + {bias}); }}\n"
V_2x2 = """module {name}(A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  assign O[0] = {o0};
  assign O[1] = (A[1] & B[0]) ^ (A[0] & B[1]);
  assign O[2] = (A[1] & B[1]) & ~(A[0] & B[0]);
  assign O[3] = A[1] & B[1] & A[0] & B[0];
endmodule
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("APPMULT_FX_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "lib"
    head = HEADER.format(mae_pct="0.00", mae=0, power=0.02)
    for name in ("mul2u_ok", "mul2u_bad"):  # C + Verilog of the same circuit
        _write(root / "2x2" / f"{name}.c", head + C_EXACT.format(name=name, bias=0))
    _write(root / "2x2" / "mul2u_ok.v", V_2x2.format(name="mul2u_ok", o0="A[0] & B[0]"))
    _write(root / "2x2" / "mul2u_bad.v", V_2x2.format(name="mul2u_bad", o0="A[0] | B[0]"))
    _write(root / "2x2" / "mul2u_broken.c", "uint64_t mul2u_broken(uint64_t A) { return A * ; }")
    liar = HEADER.format(mae_pct="0.00", mae=3, power=0.01)
    _write(root / "2x2" / "mul2u_liar.c", liar + C_EXACT.format(name="mul2u_liar", bias=0))
    rect = HEADER.format(mae_pct="11.72", mae=7.5, power=0.05)  # A*(B+1): error A, mean 7.5
    rect = rect.replace("WCE% = 0.00", "WCE% = 23.44").replace("WCE = 0", "WCE = 15")
    rect = rect.replace("EP% = 0.00", "EP% = 93.75")
    _write(root / "rect" / "mul4x2u_plus.c", rect + C_EXACT.format(name="mul4x2u_plus", bias=1))
    (root / "luts").mkdir()
    multiplier("mul3u_trunc3").with_hardware(power_mw=0.001).save(root / "luts" / "t3.lut")
    _write(root / "README.md", "not a multiplier\n")
    return root


def _expected(name: str) -> np.ndarray:
    a, b = np.arange(16)[:, None], np.arange(4)[None, :]
    tables = {
        "mul2u_ok": np.arange(4)[:, None] * np.arange(4)[None, :],
        "mul4x2u_plus": a * (b + 1),
        "mul3u_trunc3": multiplier("mul3u_trunc3").table.numpy(),
    }
    return tables[name]


def test_import_builds_checks_and_reports(library: Path, tmp_path: Path) -> None:
    report = import_library(library, tmp_path / "cat", workers=1, progress=False)
    names = [e["name"] for e in report.entries]
    assert names == ["mul2u_ok", "mul3u_trunc3", "mul4x2u_plus"]
    assert sorted(report.refused) == ["mul2u_bad", "mul2u_broken", "mul2u_liar"]
    text = "\n".join(report.problems)
    assert "mul2u_bad: refused: mul2u_bad.v and mul2u_bad.c disagree (table[0][1] = 1 vs 0)" in text
    assert "2x2/mul2u_broken.c: ValueError: mul2u_broken takes 1 parameters" in text
    assert (
        "mul2u_liar: refused: mul2u_liar.c: the table read as 2x2 unsigned contradicts the "
        "file's EvoApproxLib header: metrics differ from the header (mae: computed 0, header 3)"
    ) in text
    data = json.loads(report.catalogue.read_text())
    assert data["format"] == "appmult-fx-catalogue" and data["version"] == 1
    ok = data["multipliers"][0]
    assert ok["sources"] == ["2x2/mul2u_ok.c", "2x2/mul2u_ok.v"] and ok["file"] == "mul2u_ok.lut"
    assert ok["hardware"]["power_mw"] == 0.02 and ok["hardware"]["delay_ns"] == 0.21
    assert (ok["bits_a"], ok["bits_b"], ok["signed"]) == (2, 2, False)
    mults = load_catalogue(report.catalogue)
    assert [m.name for m in mults] == names
    for m in mults:
        assert np.array_equal(m.table.numpy(), _expected(m.name)), m.name
    assert mults[2].bits == (4, 2) and mults[2].hardware["power_mw"] == 0.05
    assert mults[1].hardware == {"power_mw": 0.001}
    # a file outside the catalogue's folder, or changed behind its back, is refused
    data["multipliers"][0]["file"] = "../lib/luts/t3.lut"
    (tmp_path / "evil.json").write_text(json.dumps(data))
    with pytest.raises(LutFormatError, match="outside the catalogue's folder"):
        load_catalogue(tmp_path / "evil.json")
    multiplier("mul2u_exact").renamed("mul2u_ok").save(tmp_path / "cat" / "mul2u_ok.lut")
    with pytest.raises(LutFormatError, match="differs from the catalogue's"):
        load_catalogue(tmp_path / "cat")


def test_parallel_import_and_cli(library: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cat"
    assert main(["lut", "import", str(library), "--out", str(out), "--workers", "2"]) == 1
    captured = capsys.readouterr()
    assert "3 multipliers imported, 3 refused" in captured.out
    assert "refused: mul2u_bad, mul2u_broken, mul2u_liar (the catalogue holds" in captured.err
    assert "problem: mul2u_bad: refused" in captured.err
    assert [e["name"] for e in read_catalogue(out)] == [
        "mul2u_ok", "mul3u_trunc3", "mul4x2u_plus"
    ]  # fmt: skip
    assert main(["lut", "list", "--catalogue", str(out), "--sort", "power"]) == 0
    rows = [r.split()[0] for r in capsys.readouterr().out.splitlines()[2:]]
    assert rows == ["mul3u_trunc3", "mul2u_ok", "mul4x2u_plus"]  # 0.001 < 0.02 < 0.05 mW
    assert main(["lut", "list", "--catalogue", str(out), "--sort", "mred"]) == 0
    rows = [r.split()[0] for r in capsys.readouterr().out.splitlines()[2:]]
    assert rows[0] == "mul2u_ok"  # exact: mred 0
    png = tmp_path / "front.png"
    assert main(["lut", "plot", "--catalogue", str(out), "-o", str(png)]) == 0
    # mul4x2u_plus costs most and errs most: dominated, so off the front
    assert "Pareto front: mul3u_trunc3, mul2u_ok\n" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["lut", "info", str(out / "mul2u_ok.lut")]) == 0
    assert "hardware  power 0.02 mW, area 12.5 um2, delay 0.21 ns" in capsys.readouterr().out


def test_evoapprox_sample_imports_right(shared: Path, tmp_path: Path, monkeypatch) -> None:
    """Every circuit imported from the sample equals the test's own harness; a circuit is
    only ever refused because a netlist disagrees with its C model, never silently."""
    monkeypatch.setenv("APPMULT_FX_CACHE_DIR", str(tmp_path / "cache"))
    root = shared / "evoapprox"
    report = import_library(root, tmp_path / "cat", workers=1, progress=False)
    c_models = sorted(root.rglob("mul*.c"))
    assert len(report.entries) + len(report.refused) == len(c_models)
    by_name = {m.name: m for m in load_catalogue(tmp_path / "cat")}
    for path in c_models:
        if path.stem in by_name:
            m = by_name[path.stem]
            assert np.array_equal(m.table.numpy(), truth(path, tmp_path)), path
            assert m.hardware and m.hardware["source"] == "EvoApproxLib header (PDK45)"
        else:
            assert any(f"{path.stem}: refused:" in p and "disagree" in p for p in report.problems)
    assert len(by_name) >= len(c_models) - 1
    assert torch.equal(by_name["mul8u_2AC"].table[255, 20], torch.tensor(5157, dtype=torch.int32))


def test_seed_folder_blif_and_text_luts_cross_checked(shared: Path, tmp_path: Path) -> None:
    """The seed's vert_trunc circuits: BLIF netlist + two text LUTs per circuit, one table."""
    report = import_library(shared / "appmults" / "vert_trunc", tmp_path / "cat", workers=1,
                            progress=False)  # fmt: skip
    assert len(report.entries) == 2 and not report.problems
    for entry, mult in zip(report.entries, load_catalogue(tmp_path / "cat"), strict=True):
        kinds = sorted(Path(s).suffix for s in entry["sources"])
        assert kinds == [".blif", ".txt", ".txt"]
        text = next(s for s in entry["sources"] if s.endswith("_lutfp.txt"))
        rows = [r.split() for r in (shared / "appmults" / "vert_trunc" / text).read_text()
                .splitlines() if r[:1].isdigit()]  # fmt: skip
        truth = np.zeros((1 << mult.bits, 1 << mult.bits), dtype=np.int64)
        for a, b, v in rows:
            truth[int(a), int(b)] = int(v)
        assert np.array_equal(mult.table.numpy(), truth)


def test_import_into_an_existing_catalogue_merges(
    library: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A second import into a catalogue keeps the earlier entries (never drops one whose
    .lut stays on disk), replaces an entry of the same name and table, and refuses (exit 1,
    reported) a circuit whose name an earlier entry of another table holds."""
    out = tmp_path / "cat"
    report = import_library(library, out, workers=1, progress=False)
    first = {e["name"]: e for e in read_catalogue(out)}
    assert sorted(first) == ["mul2u_ok", "mul3u_trunc3", "mul4x2u_plus"]
    second = tmp_path / "lib2"
    (second / "luts").mkdir(parents=True)
    multiplier("mul3u_trunc3").save(second / "luts" / "t3.lut")  # same name and table
    multiplier("mul3u_trunc1").save(second / "luts" / "t1.lut")  # a new one
    report = import_library(second, out, workers=1, progress=False)
    assert [e["name"] for e in report.entries] == ["mul3u_trunc1", "mul3u_trunc3"]
    assert report.replaced == ["mul3u_trunc3"] and report.kept == ["mul2u_ok", "mul4x2u_plus"]
    entries = {e["name"]: e for e in read_catalogue(out)}
    assert sorted(entries) == ["mul2u_ok", "mul3u_trunc1", "mul3u_trunc3", "mul4x2u_plus"]
    assert entries["mul2u_ok"] == first["mul2u_ok"]
    assert entries["mul3u_trunc3"]["sources"] == ["luts/t3.lut"]  # the new import's
    assert [m.name for m in load_catalogue(out)] == sorted(entries)
    # another table under an existing name: refused, the earlier entry and file untouched
    third = tmp_path / "lib3"
    third.mkdir()
    multiplier("mul2u_trunc1").renamed("mul2u_ok").save(third / "mul2u_ok.lut")
    before = (out / "mul2u_ok.lut").read_bytes()
    assert main(["lut", "import", str(third), "--out", str(out), "--workers", "1"]) == 1
    captured = capsys.readouterr()
    assert "0 multipliers imported, 4 earlier entries kept, 1 refused" in captured.out
    assert "mul2u_ok: refused: the catalogue already holds a different multiplier" in (captured.err)
    assert (out / "mul2u_ok.lut").read_bytes() == before
    assert {e["name"]: e for e in read_catalogue(out)} == entries
    assert [m.name for m in load_catalogue(out)] == sorted(entries)
    (out / "catalogue.json").write_text("{}")
    with pytest.raises(LutFormatError, match="expected format"):
        import_library(second, out, workers=1, progress=False)
