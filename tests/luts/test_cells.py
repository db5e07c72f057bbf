"""Cell libraries: every built-in OSU FreePDK45 cell against its datasheet function; cells=."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from appmult_fx.luts.cells import FREEPDK45, Cell
from appmult_fx.luts.netlist import NetlistError
from appmult_fx.luts.netlist_import import from_netlist, parse_netlist
from appmult_fx.luts.netlist_sim import simulate_multiplier

# The OSU FreePDK45 datasheet, written independently of luts/cells.py: pins in the library's
# positional order (inputs, then outputs) and each output as a Python function of the inputs.
# MUX2X1 as EvoApproxLib's netlists use it (Y = S ? B : A: with it the published MAE of
# EvoApprox8b mul8_090, 578.876740, is reproduced; with OSU's inverting model it is 596.69).
DATASHEET = {
    "AND2X1": ("A B", {"Y": lambda a, b: a & b}),
    "AND2X2": ("A B", {"Y": lambda a, b: a & b}),
    "AOI21X1": ("A B C", {"Y": lambda a, b, c: 1 - ((a & b) | c)}),
    "AOI22X1": ("A B C D", {"Y": lambda a, b, c, d: 1 - ((a & b) | (c & d))}),
    "BUFX2": ("A", {"Y": lambda a: a}),
    "BUFX4": ("A", {"Y": lambda a: a}),
    "CLKBUF1": ("A", {"Y": lambda a: a}),
    "CLKBUF2": ("A", {"Y": lambda a: a}),
    "CLKBUF3": ("A", {"Y": lambda a: a}),
    "FAX1": (
        "A B C",
        {"YC": lambda a, b, c: int(a + b + c >= 2), "YS": lambda a, b, c: (a + b + c) & 1},
    ),
    "HAX1": ("A B", {"YC": lambda a, b: a & b, "YS": lambda a, b: a ^ b}),
    "INVX1": ("A", {"Y": lambda a: 1 - a}),
    "INVX2": ("A", {"Y": lambda a: 1 - a}),
    "INVX4": ("A", {"Y": lambda a: 1 - a}),
    "INVX8": ("A", {"Y": lambda a: 1 - a}),
    "MUX2X1": ("A B S", {"Y": lambda a, b, s: b if s else a}),  # EvoApproxLib: non-inverting
    "NAND2X1": ("A B", {"Y": lambda a, b: 1 - (a & b)}),
    "NAND3X1": ("A B C", {"Y": lambda a, b, c: 1 - (a & b & c)}),
    "NOR2X1": ("A B", {"Y": lambda a, b: 1 - (a | b)}),
    "NOR3X1": ("A B C", {"Y": lambda a, b, c: 1 - (a | b | c)}),
    "OAI21X1": ("A B C", {"Y": lambda a, b, c: 1 - ((a | b) & c)}),
    "OAI22X1": ("A B C D", {"Y": lambda a, b, c, d: 1 - ((a | b) & (c | d))}),
    "OR2X1": ("A B", {"Y": lambda a, b: a | b}),
    "OR2X2": ("A B", {"Y": lambda a, b: a | b}),
    "XNOR2X1": ("A B", {"Y": lambda a, b: 1 - (a ^ b)}),
    "XOR2X1": ("A B", {"Y": lambda a, b: a ^ b}),
}


def cell_module(cell: str, pins: list[str], outputs: list[str], positional: bool) -> str:
    """A module whose operand A drives the cell's inputs and whose output O holds its outputs."""
    n_in = len(pins)
    ins = [f"A[{k}]" for k in range(n_in)]
    outs = [f"O[{k}]" for k in range(len(outputs))]
    if positional:
        conns = ", ".join(ins + outs)
    else:
        conns = ", ".join(f".{p}({n})" for p, n in zip([*pins, *outputs], ins + outs, strict=True))
    return (
        f"module t(A, B, O);\n  input [{n_in - 1}:0] A;\n  input B;\n"
        f"  output [{len(outputs) - 1}:0] O;\n  {cell} u0 ({conns});\nendmodule\n"
    )


@pytest.mark.parametrize("positional", [False, True])
def test_every_builtin_cell_matches_the_datasheet(tmp_path: Path, positional: bool) -> None:
    assert set(FREEPDK45) == set(DATASHEET)
    for cell, (pins, functions) in DATASHEET.items():
        path = tmp_path / f"{cell}.v"
        path.write_text(cell_module(cell, pins.split(), list(functions), positional))
        netlist = parse_netlist(path)
        codes = simulate_multiplier(netlist).codes[:, 0]
        for a, got in enumerate(codes):
            bits = [(a >> k) & 1 for k in range(len(pins.split()))]
            want = sum(f(*bits) << k for k, f in enumerate(functions.values()))
            assert got == want, (cell, bits)
        assert netlist.cell_count() == 1


def test_user_cells_extend_and_override_the_library(tmp_path: Path) -> None:
    text = """module m(A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  MAJ3 u0 (A[0], A[1], B[0], O[0]);      // positional: inputs in the given order, then Y
  AND2X1 u1 (.A(A[0]), .B(B[1]), .Y(O[1]));
  MIX u2 (.X(A[1]), .Y(B[1]), .P(O[2]), .Q(O[3]));
endmodule
"""
    path = tmp_path / "m.v"
    path.write_text(text)
    cells = {
        "MAJ3": Cell({"Y": "(A & B) | (A & C) | (B & C)"}, inputs=("C", "A", "B")),
        "AND2X1": {"Y": "A | B"},  # a user's definition wins over the built-in one
        "MIX": {"P": "X ^ Y", "Q": "~(X & Y)"},  # inputs inferred: X, Y
    }
    table = simulate_multiplier(parse_netlist(path, cells=cells)).codes
    for a, b in itertools.product(range(4), range(4)):
        a0, a1, b0, b1 = a & 1, a >> 1, b & 1, b >> 1
        maj = int(a0 + a1 + b0 >= 2)
        want = maj | (a0 | b1) << 1 | (a1 ^ b1) << 2 | (1 - (a1 & b1)) << 3
        assert table[a, b] == want, (a, b)
    mult = from_netlist(path, cells=cells)
    assert mult.hardware == {"source": "netlist cell count", "cells": 3}


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ({"Y": "A +"}, "<cell X>:1: unexpected end of file"),
        ({"Y": "A & B )"}, "output 'Y': unexpected ')'"),
        (Cell({"Y": "A & Q"}, inputs=("A", "B")), "undeclared: ['Q']"),
        (Cell({"Y": "A & B"}, inputs=("A", "Y")), "pins must be distinct"),
        ({"Y": "A << 1"}, "unsupported operator '<<'"),
    ],
)
def test_bad_user_cells_are_refused(tmp_path: Path, cell: object, message: str) -> None:
    path = tmp_path / "m.v"
    path.write_text("module m(A, B, O); input A, B; output O; X u (A, B, O); endmodule\n")
    with pytest.raises(NetlistError, match=re.escape(message)):
        parse_netlist(path, cells={"X": cell})


def test_cells_argument_type_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "m.v"
    path.write_text("module m(A, B, O); input A, B; output O; assign O = A; endmodule\n")
    with pytest.raises(TypeError, match=r"cells\['X'\] must be a Cell or a mapping"):
        parse_netlist(path, cells={"X": "A & B"})


def test_blif_subckt_of_library_cells(tmp_path: Path) -> None:
    text = """.model m
.inputs A[0] A[1] B[0] B[1]
.outputs O[0] O[1] O[2] O[3]
.subckt AND2X1 A=A[0] B=B[0] Y=O[0]
.subckt HAX1 A=A[1] B=B[1] YS=O[1] YC=O[2]
.subckt INVX1 A=A[0] Y=O[3]
.end
"""
    path = tmp_path / "m.blif"
    path.write_text(text)
    netlist = parse_netlist(path)
    a, b = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    want = (a & b & 1) | (((a >> 1) ^ (b >> 1)) << 1) | (((a >> 1) & (b >> 1)) << 2)
    want |= (1 - (a & 1)) << 3
    assert np.array_equal(simulate_multiplier(netlist).codes, want)
    assert netlist.cell_count() == 3


# The behavioural cell modules EvoApproxLib appends to its ``.v`` netlists (the ``PDKGEN*``
# twins of the cells its ``*_pdk45.v`` netlists instantiate): the built-ins must agree.
PDKGEN = """
module PDKGENAOI21X1( input A, input B, input C, output Y );
    assign Y = ~((A & B) | C);
endmodule
module PDKGENOAI21X1( input A, input B, input C, output Y );
    assign Y = ~((A | B) & C);
endmodule
module PDKGENNAND3X1(input A, input B, input C, output Y );
     assign Y = ~((A & B) & C);
endmodule
module PDKGENNOR3X1(input A, input B, input C, output Y );
     assign Y = ~((A | B) | C);
endmodule
module PDKGENMUX2X1( input A, input B, input S, output Y );
    assign Y = (A & ~S) | (B & S);
endmodule
module PDKGENFAX1( input A, input B, input C, output YS, output YC );
    assign YS = (A ^ B) ^ C;
    assign YC = (A & B) | (B & C) | (A & C);
endmodule
module PDKGENHAX1( input A, input B, output YS, output YC );
    assign YS = A ^ B;
    assign YC = A & B;
endmodule
"""


@pytest.mark.parametrize(
    "cell", ["AOI21X1", "OAI21X1", "NAND3X1", "NOR3X1", "MUX2X1", "FAX1", "HAX1"]
)
def test_builtin_cells_agree_with_evoapprox_pdkgen_modules(tmp_path: Path, cell: str) -> None:
    pins, functions = DATASHEET[cell]
    tables = []
    for name in (cell, f"PDKGEN{cell}"):
        path = tmp_path / f"{name}.v"
        path.write_text(cell_module(name, pins.split(), list(functions), False) + PDKGEN)
        tables.append(simulate_multiplier(parse_netlist(path)).codes)
    assert np.array_equal(tables[0], tables[1])


def test_evoapprox_mangled_cell_names_resolve_to_library_cells(tmp_path: Path) -> None:
    """EvoApproxLib ``.v`` files instantiate renamed cells they never define."""
    text = """module m(A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  NPDKGEPDKGENNAND2X1 n0 (.A(A[0]), .B(B[0]), .Y(O[0]));
  XNPDKGENOR2X1 n1 (.A(A[1]), .B(B[0]), .Y(O[1]));
  XPDKGENOR2X1 n2 (.A(A[0]), .B(B[1]), .Y(O[2]));
  PDKGENXPDKGENNPDKGENOR2X1 n3 (.A(A[1]), .B(B[1]), .Y(O[3]));
endmodule
"""
    path = tmp_path / "m.v"
    path.write_text(text)
    codes = simulate_multiplier(parse_netlist(path)).codes
    for a, b in itertools.product(range(4), range(4)):
        a0, a1, b0, b1 = a & 1, a >> 1, b & 1, b >> 1
        want = (1 - (a0 & b0)) | (1 - (a1 ^ b0)) << 1 | (a0 ^ b1) << 2 | (1 - (a1 ^ b1)) << 3
        assert codes[a, b] == want, (a, b)
    path.write_text(text.replace("XPDKGENOR2X1 n2", "PDKGENFOO2X1 n2"))
    with pytest.raises(NetlistError, match="unknown model 'PDKGENFOO2X1'"):
        parse_netlist(path).order("m")
