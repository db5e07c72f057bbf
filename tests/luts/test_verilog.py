"""Structural Verilog: generated array multipliers simulate exactly; constructs and errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from appmult_fx.luts.netlist import NetlistError
from appmult_fx.luts.netlist_import import parse_netlist
from appmult_fx.luts.netlist_sim import simulate_multiplier
from appmult_fx.luts.registry import multiplier
from appmult_fx.luts.user_defined import from_netlist

CELLS = """
module FA(input a, input b, input c, output s, output co);
  assign s = a ^ b ^ c;
  assign co = (a & b) | (c & (a ^ b));
endmodule

module HA(a, b, s, c);  // non-ANSI ports
  input a, b;
  output s, c;
  assign s = ~(a ~^ b), c = a ? b : 1'b0;
endmodule
"""


def array_multiplier(n: int, drop: int = 0) -> str:
    """An unsigned n x n multiplier: AND gates, then column compression with FA/HA cells."""
    lines = [
        f"/* {n}x{n}, {drop} columns dropped */",
        "module mul(A, B, O);",
        f"  input [{n - 1}:0] A;",
        f"  input [{n - 1}:0] B;",
        f"  output [{2 * n - 1}:0] O;",
    ]
    cols: list[list[str]] = [[] for _ in range(2 * n + 1)]
    k = 0
    for i in range(n):
        for j in range(n):
            if i + j >= drop:
                lines.append(f"  and g{i}_{j} (p{i}_{j}, A[{i}], B[{j}]);")
                cols[i + j].append(f"p{i}_{j}")
    for c in range(2 * n):
        while len(cols[c]) >= 2:
            k += 1
            if len(cols[c]) >= 3:
                a, b, ci = (cols[c].pop(0) for _ in range(3))
                lines.append(f"  FA fa{k} (.a({a}), .b({b}), .c({ci}), .s(s{k}), .co(c{k}));")
            else:
                a, b = cols[c].pop(0), cols[c].pop(0)
                lines.append(f"  HA ha{k} ({a}, {b}, s{k}, c{k});  // positional")
            cols[c].append(f"s{k}")
            cols[c + 1].append(f"c{k}")
        bit = cols[c][0] if cols[c] else "1'b0"
        lines.append(f"  assign O[{c}] = {bit};")
    return "\n".join([*lines, "endmodule", CELLS])


@pytest.mark.parametrize(("bits", "drop"), [(8, 0), (8, 5), (3, 0), (6, 4)])
def test_array_multipliers(tmp_path: Path, bits: int, drop: int) -> None:
    path = tmp_path / "mul.v"
    path.write_text(array_multiplier(bits, drop))
    mult = from_netlist(path)
    ref = multiplier(f"mul{bits}u_exact" if drop == 0 else f"mul{bits}u_trunc{drop}")
    assert mult.provenance["format"] == "verilog" and mult.name == "mul"
    assert torch.equal(mult.table, ref.table)


def test_evoapprox_style_bus_and_vector_ports(tmp_path: Path) -> None:
    text = """module m2(A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  wire [9:0] N;
  assign N[0] = A[0];
  assign {N[3], N[2], N[1]} = {B, A[1]};
  pp p (.X(N[1:0]), .Y(N[3:2]), .P(N[7:4]));
  assign O = N[7:4];
endmodule
module pp(input [1:0] X, input [1:0] Y, output [3:0] P);
  wire t;
  and (P[0], X[0], Y[0]);
  xor (P[1], X[1] & Y[0], X[0] & Y[1]);
  assign t = X[1] & Y[0] & X[0] & Y[1];
  assign P[2] = (X[1] & Y[1]) ^ t;
  assign P[3] = X[1] & Y[1] & t;
endmodule
"""
    path = tmp_path / "m2.v"
    path.write_text(text)
    assert torch.equal(from_netlist(path).table, multiplier("mul2u_exact").table)


BAD = [
    ("always @(A) O = A;", "unsupported Verilog 'always'"),
    ("initial O = 0;", "unsupported Verilog 'initial'"),
    ("reg [3:0] r;", "unsupported Verilog 'reg'"),
    ("parameter W = 4;", "unsupported Verilog 'parameter'"),
    ("function f;", "unsupported Verilog 'function'"),
    ("`define W 4", "unsupported Verilog '`define'"),
    ("inout [1:0] X;", "inout ports are not supported"),
    ("wire [3:0] m [0:1];", "arrays ('m') are not supported"),
    ("assign O = A << 1;", "unsupported operator '<<'"),
    ("assign O = A >> B;", "unsupported operator '>>'"),
    ("assign O = {3'b0, A == B};", "unsupported operator '=='"),
    ("assign O = A < B;", "unsupported operator '<'"),
    ("assign O = A / B;", "unsupported operator '/'"),
    ("assign O = A % B;", "unsupported operator '%'"),
    ("assign O = A ** 2;", "unsupported operator '**'"),
    ("assign O = 4'b1x0z;", "x/z bits are not supported"),
    ("assign O = $clog2(A);", "unsupported system function '$clog2'"),
    ("assign O[0] = A[B[0]];", "expected a constant integer"),
    ("assign O = {A, 5};", "unsized constant in a concatenation"),
    ("assign O[4] = A[0];", "index 4 out of range [3:0] of 'O'"),
    ("assign O[5:2] = A;", "part select [5:2] out of range of 'O'"),
    ("assign O = {B{A}};", "replication count must be a positive constant"),
    ("assign A[0] & B[0] = O[0];", "left side of assign must be nets or selects"),
    ("assign #1 O = A;", "delays and drive strengths"),
    ("and #2 (O[0], A[0], B[0]);", "gate delays on 'and'"),
    ("and (O[1:0], A[0], B[0]);", "gate terminals are 1 bit wide, got 2 bits"),
    ("DFFPOSX1 u1 (.D(A[0]), .CLK(B[0]), .Q(O[0]));", "unknown model 'DFFPOSX1'"),
    ("TBUFX1 u1 (.A(A[0]), .EN(B[0]), .Y(O[0]));", "unknown model 'TBUFX1'"),
    ("HA h (A[0], B[0], O[0]);", "'HA' has 4 ports, 3 connected"),
    ("FA f (.a(A), .b(B[0]), .c(B[1]), .s(O[0]), .co(O[1]));", "port 'a' of 'FA': 1 bits, 2"),
    ("HA #(2) h (A[0], B[0], O[0], O[1]);", "parameterised instance of 'HA'"),
    ("HA h (.a(A[0]), .b(B[0]), .s(O[0]), .c(A[0] & B[0]));", "output port 'c' of 'HA' drives"),
    ("HA h (.a(A[0]), .b(B[0]), .s(O[0]), .q(O[1]));", "model 'HA' has no port 'q'"),
]


@pytest.mark.parametrize(("statement", "message"), BAD)
def test_unsupported_constructs_name_file_and_line(
    tmp_path: Path, statement: str, message: str
) -> None:
    head = "module m(A, B, O);\n  input [1:0] A;\n  input [1:0] B;\n  output [3:0] O;\n"
    path = tmp_path / "bad.v"
    path.write_text(head + "  " + statement + "\n  assign O = A * B;\nendmodule\n" + CELLS)
    with pytest.raises(NetlistError, match=re.escape(message)) as info:
        from_netlist(path)
    assert info.value.line == 5 and info.value.path == str(path)
    assert str(info.value).startswith(f"{path}:5: ")


GATES = """
module half(input x, input y, output s, output c);  // defined before the top
  xor (s, x, y);
  and (c, x, y);
endmodule

module top(input [2:0] A, B, output [9:0] O);  // ANSI list: B is [2:0] too
  supply0 gnd;
  supply1 vdd;
  wire signed [2:0] sa = A;  // net declaration assignment, signed wire
  wire [3:0] ext;
  wire n0, n1, n2, m0;
  and  (O[0], A[0], A[1], A[2], B[0]);  // any number of inputs
  nand g1 (O[1], A[0], B[1], vdd), g2 (O[2], A[1], B[2]);  // a list of gates
  nor  (O[3], A[2], B[0], gnd);
  xnor (O[4], A[0], A[1], B[2]);
  buf  (n0, n1, A[2]);  // several outputs
  not  (n2, B[1]);
  or   (O[5], n0, n1, n2);
  half h (.x(A[0] ^ B[0]), .y(1), .s(O[6]), .c(m0));  // unsized literal sized to the pin
  assign O[7] = m0;
  assign ext = sa;  // sign extension of a signed wire
  assign O[9:8] = ext[3:2];
endmodule
"""


def test_gate_primitives_declarations_and_top_detection(tmp_path: Path) -> None:
    path = tmp_path / "gates.v"
    path.write_text(GATES)
    netlist = parse_netlist(path)
    sim = simulate_multiplier(netlist)
    assert netlist.top == "top" and (sim.bits_a, sim.bits_b, sim.out_bits) == (3, 3, 10)
    for a in range(8):
        for b in range(8):
            bit = [(a >> k) & 1 for k in range(3)]
            bb = [(b >> k) & 1 for k in range(3)]
            sa = a - 8 if a >= 4 else a
            ext = sa & 15
            o = bit[0] & bit[1] & bit[2] & bb[0]
            o |= (1 - (bit[0] & bb[1])) << 1
            o |= (1 - (bit[1] & bb[2])) << 2
            o |= (1 - (bit[2] | bb[0])) << 3
            o |= (1 - (bit[0] ^ bit[1] ^ bb[2])) << 4
            o |= (bit[2] | (1 - bb[1])) << 5
            o |= ((bit[0] ^ bb[0]) ^ 1) << 6
            o |= ((bit[0] ^ bb[0]) & 1) << 7
            o |= (ext >> 2) << 8
            assert sim.codes[a, b] == o, (a, b)


def test_long_chains_and_limits(tmp_path: Path) -> None:
    terms = " ^ ".join(f"A[{k % 4}]" for k in range(401))  # odd count: equals A[0]
    path = tmp_path / "chain.v"
    path.write_text(
        "module m(input [3:0] A, B, output [7:0] O);\n"
        f"  assign O = {{7'b0, {terms}}} + A * B;\nendmodule\n"
    )
    table = from_netlist(path).table
    a, b = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    assert torch.equal(table, ((a & 1) + a * b).to(torch.int32))
    for text, message in [
        ("wire [70000:0] w;", "range [70000:0] wider than 65536 bits"),
        ("assign O = 99999'd1;", "size must be 1..65536"),
        ("assign O = {9000{8'd1}};", "concatenation of 72000 bits"),
    ]:
        path.write_text(f"module m(input [3:0] A, B, output [7:0] O);\n  {text}\nendmodule\n")
        with pytest.raises(NetlistError, match=re.escape(message)) as info:
            from_netlist(path)
        assert info.value.line == 2
