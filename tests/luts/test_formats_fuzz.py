"""Fuzz: a corrupted LUT file gives a clear LutFormatError or exactly the table it spells out."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from appmult_fx.luts.format_errors import LutFormatError
from appmult_fx.luts.formats import load_multiplier
from appmult_fx.luts.registry import exact_multiplier
from appmult_fx.luts.text_lut_format import GRAD_A_HEADER, GRAD_B_HEADER, format_seed_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.luts.test_formats import oracle_blocks, table_from

_MULT = exact_multiplier(3, False)
_MULT = _MULT.with_gradient_tables(_MULT.grad_a + 0.5, _MULT.grad_b, window=1)
VALID_TEXT = format_seed_text(_MULT).encode()
_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def corruptions(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` with one to three random edits: byte changes, deletions, insertions, line ops."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "delete", "insert", "dup_line", "drop_line", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "set" and data:
            data[pos] = draw(st.sampled_from(list(b"0123456789 -\n\tx.+") + [0, 200, 255]))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        elif op in ("dup_line", "drop_line"):
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines[i : i + 1] = [lines[i]] * (2 if op == "dup_line" else 0)
            data = bytearray(b"\n".join(lines))
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def _load(data: bytes, name: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return load_multiplier(path)


@_SETTINGS
@given(corruptions(VALID_TEXT))
def test_corrupted_text_is_rejected_or_read_literally(data: bytes) -> None:
    try:
        mult = _load(data, "m_lutfp+bp_avg_1_1.txt")
    except LutFormatError as exc:
        assert "m_lutfp+bp_avg_1_1.txt" in str(exc)
        return
    # it loaded: every table must be exactly what the (still well-formed) text says
    blocks = oracle_blocks(data.decode("ascii"))
    assert mult.bits == 3
    assert np.array_equal(
        mult.table.numpy(), table_from(blocks["LUT for approximate multiplier:"], 3)
    )
    for header, grad in ((GRAD_A_HEADER, mult.grad_a), (GRAD_B_HEADER, mult.grad_b)):
        assert np.array_equal(grad.numpy() * 16, table_from(blocks[header], 3))


def _own_file() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return _MULT.save(Path(tmp) / "m.lut").read_bytes()


VALID_OWN = _own_file()


@_SETTINGS
@given(corruptions(VALID_OWN))
def test_corrupted_own_file_is_rejected_or_identical(data: bytes) -> None:
    try:
        mult = _load(data, "m.lut")
    except LutFormatError as exc:
        assert "m.lut" in str(exc)
        return
    assert mult.sha256 == _MULT.sha256 and mult.name == _MULT.name
