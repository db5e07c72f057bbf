"""Fuzz: corrupted BLIF and Verilog give a NetlistError naming the file, or simulate; no crash."""

from __future__ import annotations

import tempfile
from pathlib import Path

from appmult_fx.luts.netlist import NetlistError
from appmult_fx.luts.user_defined import from_netlist
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.luts.test_netlist import HALF_ADDER_2X2
from tests.luts.test_verilog import array_multiplier

_ALPHABET = list(".=[]();,~&|^?:01-#\\\n \tabxyzAB{}+*'!") + [
    ".names",
    ".subckt",
    "assign",
    "module",
    "HAX1",
    "8'h",
]


@st.composite
def edited(draw: st.DrawFn, text: str) -> str:
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 6))
        insert = "".join(draw(st.lists(st.sampled_from(_ALPHABET), max_size=3)))
        text = text[:pos] + insert + text[pos + cut :]
    return text


def _check(text: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        try:
            mult = from_netlist(path)
        except NetlistError as exc:
            assert exc.path == str(path)
            return
        assert mult.table.shape == (1 << mult.bits_a, 1 << mult.bits_b)


@settings(max_examples=150, deadline=None)
@given(edited(HALF_ADDER_2X2))
def test_corrupted_blif(text: str) -> None:
    _check(text, "m.blif")


@settings(max_examples=150, deadline=None)
@given(edited(array_multiplier(2)))
def test_corrupted_verilog(text: str) -> None:
    _check(text, "m.v")


EVO_STYLE = """// PDK45_PWR = 0.052 mW
module m(A, B, O);
  input [2:0] A;
  input [1:0] B;
  output [4:0] O;
  wire [7:0] N;
  assign N[1:0] = {A[0] & B[0], 1'b0};
  HAX1 h (.A(A[1] & B[0]), .B(A[0] & B[1]), .YS(N[2]), .YC(N[3]));
  assign {N[7], N[6:4]} = {1'b0, A[2:1]} * B + N[3];
  assign O = {N[6:4], N[2], N[1] | !N[0]};
endmodule
"""


@settings(max_examples=150, deadline=None)
@given(edited(EVO_STYLE))
def test_corrupted_evoapprox_style_verilog(text: str) -> None:
    _check(text, "m.v")
