"""LUT files: the seed text formats, TFApprox raw tables, the own format, and every error path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from appmult_fx.luts.format_errors import LutFormatError
from appmult_fx.luts.formats import load_multiplier, save_multiplier
from appmult_fx.luts.multiplier import Multiplier
from appmult_fx.luts.registry import exact_multiplier
from appmult_fx.luts.text_lut_format import (
    FORWARD_HEADER,
    GRAD_A_HEADER,
    GRAD_B_HEADER,
    format_seed_text,
    seed_name,
)


def oracle_blocks(text: str) -> dict[str, np.ndarray]:
    """An independent parse: header line -> ``[rows, 3]`` array of the ``A B value`` below it."""
    parts = re.split(r"^[ \t]*(LUT for[^\n]*)$", text, flags=re.M)
    return {
        header.strip(): np.array(body.split(), dtype=np.int64).reshape(-1, 3)
        for header, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def table_from(rows: np.ndarray, bits: int) -> np.ndarray:
    """The table the rows spell out (signed operands indexed modulo 2**bits)."""
    n = 1 << bits
    table = np.zeros((n, n), dtype=np.int64)
    table[rows[:, 0] % n, rows[:, 1] % n] = rows[:, 2]
    return table


# --- the shared seed files ----------------------------------------------------------------


def test_every_forward_seed_file_loads_with_its_values(seed_luts: dict[Path, Multiplier]) -> None:
    for path in (p for p in seed_luts if p.name.endswith("_lutfp.txt")):
        mult = seed_luts[path]
        bits = (
            int(path.parent.name[4]) if path.parent.name.startswith("mult") else int(path.name[5])
        )
        assert (mult.bits, mult.signed, mult.has_gradients) == (bits, False, False), path
        assert mult.name == path.name[: -len("_lutfp.txt")]
        expected = table_from(oracle_blocks(path.read_text())[FORWARD_HEADER], bits)
        assert np.array_equal(mult.table.numpy(), expected), path


def test_every_gradient_seed_file_loads_forward_and_gradients(
    seed_luts: dict[Path, Multiplier],
) -> None:
    for path in (p for p in seed_luts if "+bp_avg_" in p.name):
        mult = seed_luts[path]
        blocks = oracle_blocks(path.read_text())
        window = int(path.stem.rsplit("_", 1)[1])
        assert mult.has_gradients and mult.provenance["window"] == window
        assert mult.provenance["edge"] == "row"
        forward = seed_luts[path.with_name(seed_name(path) + "_lutfp.txt")]
        assert torch.equal(mult.table, forward.table), path
        for header, grad in ((GRAD_A_HEADER, mult.grad_a), (GRAD_B_HEADER, mult.grad_b)):
            expected = table_from(blocks[header], mult.bits) / 16
            assert np.array_equal(grad.numpy(), expected.astype(np.float32)), path


def test_writer_reproduces_seed_files(seed_luts: dict[Path, Multiplier]) -> None:
    """Byte for byte where the file has no tool warnings; the data blocks always."""
    whole = 0
    for path, mult in seed_luts.items():
        text = path.read_text()
        ours = format_seed_text(mult)
        assert ours[ours.index(FORWARD_HEADER) :] == text[text.index(FORWARD_HEADER) :], path
        if "_lutfp.txt" in path.name and "Warning" not in text and "INFO" in text:
            assert ours == text, path
            whole += 1
    assert whole >= 5


def test_seed_info_is_kept_in_provenance(seed_luts: dict[Path, Multiplier]) -> None:
    mult = next(m for p, m in seed_luts.items() if p.name == "mul7u_06Q_lutfp.txt")
    assert mult.provenance["seed_info"]["Error rate"] == "0.953979"


# --- own format -----------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [False, True])
def test_own_format_round_trip(tmp_path: Path, signed: bool) -> None:
    mult = exact_multiplier(5, signed)
    mult = mult.with_gradient_tables(mult.grad_a * 0.5, mult.grad_b + 0.25, window=3, note="x")
    out = save_multiplier(mult, tmp_path / "m.lut")
    back = load_multiplier(out)
    assert (back.name, back.bits, back.signed, back.sha256) == (mult.name, 5, signed, mult.sha256)
    assert back.provenance == mult.provenance
    assert torch.equal(back.grad_a, mult.grad_a) and torch.equal(back.table, mult.table)
    header = json.loads(np.load(out)["header"].tobytes())
    assert header["window"] == 3 and header["sha256"] == mult.sha256


def test_own_format_without_gradients_and_seed_round_trip(tmp_path: Path) -> None:
    table = torch.arange(16).reshape(4, 4) - 8  # any 4-bit signed values
    mult = Multiplier("odd", 2, True, table)
    back = load_multiplier(mult.save(tmp_path / "odd.lut"))
    assert back.sha256 == mult.sha256 and not back.has_gradients
    text_back = load_multiplier(save_multiplier(mult, tmp_path / "odd_lutfp.txt"))
    assert text_back.signed and torch.equal(text_back.table, mult.table)


def _rewrite_archive(src: Path, dst: Path, **replace: np.ndarray | None) -> Path:
    with np.load(src) as z:
        members = {k: z[k] for k in z.files}
    for k, v in replace.items():
        if v is None:
            members.pop(k)
        else:
            members[k] = v
    with open(dst, "wb") as f:
        np.savez(f, **members)
    return dst


def test_own_format_errors(tmp_path: Path) -> None:
    mult = exact_multiplier(3, False)
    good = mult.save(tmp_path / "good.lut")
    header = json.loads(np.load(good)["header"].tobytes())

    def enc(h: object) -> np.ndarray:
        return np.frombuffer(json.dumps(h).encode(), dtype=np.uint8)

    cases = {
        "sha256 mismatch": {"table": mult.table.numpy() + 1},
        "lacks 'header'": {"header": None},
        "archive members": {"grad_a": None},
        "dtype int32": {"table": mult.table.numpy().astype(np.int64)},
        "must have shape": {"table": np.zeros((4, 4), np.int32)},
        "not valid UTF-8 JSON": {"header": np.frombuffer(b"{nope", np.uint8)},
        "field 'bits'": {"header": enc({**header, "bits": "3"})},
        "expected format": {"header": enc({**header, "version": 99})},
        "must be a JSON object": {"header": enc([1, 2])},
        r"members \[.grad_a., .grad_b., .header., .mantissa_table.": {
            "mantissa_table": np.zeros((2, 2), np.int32)
        },
    }
    for i, (message, change) in enumerate(cases.items()):
        bad = _rewrite_archive(good, tmp_path / f"bad{i}.lut", **change)
        with pytest.raises(LutFormatError, match=message) as info:
            load_multiplier(bad)
        assert str(bad) in str(info.value)
    truncated = tmp_path / "trunc.lut"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(LutFormatError, match="corrupt appmult-fx LUT archive"):
        load_multiplier(truncated)


# --- TFApprox raw -------------------------------------------------------------------------


def test_tfapprox_round_trip_and_layout(tmp_path: Path) -> None:
    mult = exact_multiplier(8, False)
    path = save_multiplier(mult, tmp_path / "mul8u.bin", format="tfapprox")
    raw = np.frombuffer(path.read_bytes(), dtype="<u2")
    assert raw.size == 65536 and raw[3 * 256 + 200] == 600  # a outer, b inner
    back = load_multiplier(path)
    assert back.provenance["format"] == "tfapprox" and torch.equal(back.table, mult.table)
    short = tmp_path / "short.bin"
    short.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(LutFormatError, match="unrecognised LUT file"):
        load_multiplier(short)
    with pytest.raises(LutFormatError, match="131072 bytes"):
        load_multiplier(short, format="tfapprox")
    with pytest.raises(ValueError, match="8-bit unsigned"):
        save_multiplier(exact_multiplier(7, False), tmp_path / "x.bin", format="tfapprox")


# --- seed text error paths ------------------------------------------------------------------


def small_text(bits: int = 3, gradients: bool = True) -> str:
    mult = exact_multiplier(bits, False)
    return format_seed_text(
        mult.with_gradient_tables(mult.grad_a, mult.grad_b, window=1), gradients
    )


def _load_text(tmp_path: Path, text: str, name: str = "m_lutfp.txt") -> Multiplier:
    path = tmp_path / name
    path.write_text(text)
    return load_multiplier(path)


def test_small_text_round_trip(tmp_path: Path) -> None:
    mult = _load_text(tmp_path, small_text(), "m_lutfp+bp_avg_1_1.txt")
    assert mult.name == "m" and mult.provenance["window"] == 1
    assert torch.equal(mult.table, exact_multiplier(3, False).table)
    assert torch.equal(mult.grad_a, exact_multiplier(3, False).grad_a)


def _replace_line(text: str, number: int, new: str | None) -> str:
    lines = text.split("\n")
    if new is None:
        del lines[number - 1]
    else:
        lines[number - 1] = new
    return "\n".join(lines)


def test_text_error_paths_name_file_and_line(tmp_path: Path) -> None:
    text = small_text()
    lines = text.split("\n")
    fwd = lines.index(FORWARD_HEADER) + 1  # 1-based line of the forward header
    cases = [
        (_replace_line(text, fwd + 5, None), "forward block has 63 entries", fwd),
        (_replace_line(text, fwd + 5, "0 4 99999"), "forward value 99999 out of range", fwd + 5),
        (_replace_line(text, fwd + 5, "0 8 0"), "operand B 8 out of range", fwd + 5),
        (_replace_line(text, fwd + 5, "0 3 0"), "duplicate pair A=0 B=3", fwd + 5),
        (_replace_line(text, fwd + 5, "0 4 x"), "three integers", fwd + 5),
        (_replace_line(text, fwd + 5, "0 4"), "three integers", fwd + 5),
        (_replace_line(text, fwd + 5, "0 4 1 2"), "three integers", fwd + 5),
        (_replace_line(text, fwd, "LUT for something else:"), "before the line", fwd + 1),
        (_replace_line(text, fwd + 65, GRAD_B_HEADER), "unexpected block order", fwd + 65),
        (text.replace("QUANTIZATION_BIT=3", "QUANTIZATION_BIT=4"), "QUANTIZATION_BIT=4", 1),
        (text[: text.index(GRAD_B_HEADER)], "unexpected block order", None),
        (text + "7 7 49\n", "grad_b block has 65 entries", None),
        ("hello\n", "not a seed LUT file", None),
        (text.replace("0 1 0", "0 1 0\u00e9"), "non-ASCII byte", None),
    ]
    for i, (bad, message, line) in enumerate(cases):
        path = tmp_path / f"bad{i}_lutfp.txt"
        path.write_bytes(bad.encode("utf-8"))
        with pytest.raises(LutFormatError, match=message) as info:
            load_multiplier(path)
        assert info.value.path == str(path)
        if line is not None:
            assert info.value.line == line, (message, str(info.value))


def test_signed_text_files(tmp_path: Path) -> None:
    signed = exact_multiplier(3, True)
    text = format_seed_text(signed, gradients=False)
    assert "\n-4 -4 16\n" in text
    assert torch.equal(_load_text(tmp_path, text).table, signed.table)
    # the Multiplier itself refuses entries its 6 output bits cannot hold, naming the first
    with pytest.raises(
        ValueError, match=r"table\[3\]\[3\] \(A=3, B=3\) = 36 does not fit the 6-bit"
    ):
        Multiplier("big", 3, True, signed.table * 4)
    with pytest.raises(LutFormatError, match="operand A 4 out of range"):
        _load_text(tmp_path, text.replace("\n3 3 9\n", "\n4 3 9\n"))


def test_binary_garbage_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "garbage.dat"
    path.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(LutFormatError, match="unrecognised LUT file"):
        load_multiplier(path)
    with pytest.raises(ValueError, match="unknown LUT format"):
        load_multiplier(path, format="csv")


def test_a_huge_bad_line_is_quoted_briefly(tmp_path: Path) -> None:
    """A 100 MB one-line file must not put the line into the error message."""
    path = tmp_path / "huge_lutfp.txt"
    with open(path, "wb") as f:
        f.write(FORWARD_HEADER.encode() + b"\n")
        f.write(b"1 2 x" * (20 * 1024 * 1024) + b"\n")
    with pytest.raises(LutFormatError, match=r"104857600 characters") as info:
        load_multiplier(path)
    assert len(str(info.value)) < 400
    path.write_bytes(b"7" * (100 * 1024 * 1024) + b"\n")  # data before any header
    with pytest.raises(LutFormatError, match="before the line") as info:
        load_multiplier(path)
    assert len(str(info.value)) < 400


def test_seed_text_windows_from_info_and_name(tmp_path: Path) -> None:
    """The half windows come from INFO (either separator spacing), fall back to the name, and a
    missing B window on a rectangular table or INFO disagreeing with the name is refused."""
    rect = exact_multiplier((4, 2), False)
    text = format_seed_text(
        rect.with_gradient_tables(rect.grad_a, rect.grad_b, window=4, window_b=1)
    )
    assert "half_ws_a=4, half_ws_b=1" in text
    back = _load_text(tmp_path, text.replace(", half_ws_b=", ",half_ws_b="), "r_lutfp.txt")
    assert (back.provenance["window"], back.provenance["window_b"]) == (4, 1)
    no_info = text.replace("half_ws_a=4, half_ws_b=1, ", "")
    named = _load_text(tmp_path, no_info, "r_lutfp+bp_avg_4_1.txt")
    assert (named.provenance["window"], named.provenance["window_b"]) == (4, 1)
    with pytest.raises(LutFormatError, match="no half_ws_b for a 4x2 table"):
        _load_text(tmp_path, text.replace(", half_ws_b=1", ""), "r2_lutfp.txt")
    with pytest.raises(LutFormatError, match=r"INFO gives half windows \(4, 1\) but the file"):
        _load_text(tmp_path, text, "r3_lutfp+bp_avg_4_4.txt")
    square = small_text().replace(", half_ws_b=1", "")  # a lone half_ws_a serves both axes
    assert _load_text(tmp_path, square, "s_lutfp.txt").provenance["window"] == 1
