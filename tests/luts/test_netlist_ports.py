"""Operands bound by port name (A rows, B columns), widths from the ports, signed outputs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from appmult_fx.luts.netlist import NetlistError
from appmult_fx.luts.netlist_import import from_netlist, parse_netlist
from appmult_fx.luts.netlist_sim import simulate_multiplier


def _write(tmp_path: Path, text: str, name: str = "m.v") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _grid(wa: int, wb: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(1 << wa), np.arange(1 << wb), indexing="ij")


@pytest.mark.parametrize(
    "header",
    [
        "module m(B, A, O);\n  input [1:0] B;\n  input [2:0] A;\n  output [4:0] O;\n",
        "module m(output [4:0] O, input [1:0] b, input [2:0] a);\n",
        "module m(input [2:0] a, input [1:0] B, output [4:0] O);\n",
    ],
)
def test_ports_named_a_and_b_are_bound_by_name(tmp_path: Path, header: str) -> None:
    a_name = "A" if "[2:0] A" in header else "a"
    b_name = "B" if "[1:0] B" in header else "b"
    body = f"  assign O = {{{a_name}, {b_name}}};\nendmodule\n"  # O = A << 2 | B: not symmetric
    sim = simulate_multiplier(parse_netlist(_write(tmp_path, header + body)))
    a, b = _grid(3, 2)
    assert (sim.bits_a, sim.bits_b) == (3, 2) and sim.codes.shape == (8, 4)
    assert np.array_equal(sim.codes, (a << 2) | b)
    assert sim.binding.startswith("ports named A and B")
    mult = from_netlist(tmp_path / "m.v")
    assert mult.bits == (3, 2) and (mult.bits_a, mult.bits_b) == (3, 2)
    assert torch.equal(mult.table, torch.from_numpy((a << 2) | b).to(torch.int32))


def test_blif_bits_named_a_and_b_are_bound_by_name(tmp_path: Path) -> None:
    text = ".model m\n.inputs B[0] B[1] A[0] A[1] A[2]\n.outputs O[0] O[1] O[2]\n"
    text += ".names A[2] O[2]\n1 1\n.names B[1] O[1]\n1 1\n.names A[0] B[0] O[0]\n10 1\n.end\n"
    sim = simulate_multiplier(parse_netlist(_write(tmp_path, text, "m.blif")))
    a, b = _grid(3, 2)
    want = ((a >> 2) << 2) | ((b >> 1) << 1) | ((a & 1) & (1 - (b & 1)))
    assert (sim.bits_a, sim.bits_b) == (3, 2) and np.array_equal(sim.codes, want)


def test_fallbacks_are_recorded_in_the_provenance(tmp_path: Path) -> None:
    two_ports = "module m(X, Y, O);\n  input [2:0] X;\n  input [1:0] Y;\n  output [4:0] O;\n"
    two_ports += "  assign O = {X, Y};\nendmodule\n"
    mult_sim = simulate_multiplier(parse_netlist(_write(tmp_path, two_ports)))
    a, b = _grid(3, 2)
    assert np.array_equal(mult_sim.codes, (a << 2) | b)
    assert mult_sim.binding == "port order (no ports named A and B): A='X', B='Y'"
    flipped = simulate_multiplier(parse_netlist(tmp_path / "m.v"), operands=("Y", "X"))
    assert np.array_equal(flipped.codes, ((a << 2) | b).T) and flipped.binding.startswith("given")
    scalars = "module m(p, q, r, s, o0, o1);\n  input p, q, r, s;\n  output o0, o1;\n"
    scalars += "  assign o0 = p & r;\n  assign o1 = q ^ s;\nendmodule\n"
    mult = from_netlist(_write(tmp_path, scalars))
    assert mult.provenance["operands"].startswith("split (no ports named A and B)")
    a, b = _grid(2, 2)
    want = (a & b & 1) | ((((a >> 1) ^ (b >> 1)) & 1) << 1)
    assert torch.equal(mult.table, torch.from_numpy(want).to(torch.int32))


@pytest.mark.parametrize(
    ("text", "operands", "message"),
    [
        (
            "module m(A, B, C, O); input [1:0] A, B; input C; output [3:0] O; assign O = A;",
            None,
            "has inputs ['C'] besides operands 'A' and 'B'",
        ),
        (
            "module m(A, B, O); input [1:0] A, B; output [3:0] O; assign O = A;",
            ("X", "B"),
            "operands=('X', 'B'): model 'm' has input ports ['A', 'B']",
        ),
        (
            "module m(a, A, B, O); input [1:0] a, A, B; output [3:0] O; assign O = A;",
            ("a", "B"),
            "has inputs ['A'] besides operands 'a' and 'B'",
        ),
        (
            "module m(p, q, r, O); input p, q, r; output [1:0] O; assign O = p;",
            None,
            "odd number of input bits (3)",
        ),
    ],
)
def test_binding_errors(
    tmp_path: Path, text: str, operands: tuple[str, str] | None, message: str
) -> None:
    path = _write(tmp_path, text + "\nendmodule\n")
    with pytest.raises(NetlistError, match=re.escape(message)):
        simulate_multiplier(parse_netlist(path), operands=operands)


@pytest.mark.parametrize("out_bits", [6, 8, 11])
def test_signed_values_are_twos_complement_of_bits_a_plus_bits_b(
    tmp_path: Path, out_bits: int
) -> None:
    """A 4x4 signed multiplier: whatever O's width, the value is its low 8 bits, signed."""
    text = f"""module m(A, B, O);
  input [3:0] A;
  input [3:0] B;
  output [{out_bits - 1}:0] O;
  assign O = $signed(A) * $signed(B);
endmodule
"""
    mult = from_netlist(_write(tmp_path, text), signed=True)
    v = np.arange(16)
    v = np.where(v >= 8, v - 16, v)
    exact = v[:, None] * v[None, :]
    if out_bits >= 8:  # the output holds the product: the table is the exact signed product
        want = exact
    else:  # missing high bits are 0: the value of the 8-bit pattern 00xxxxxx
        want = exact & ((1 << out_bits) - 1)
    assert torch.equal(mult.table, torch.from_numpy(want).to(torch.int32))
    assert mult.provenance["output_bits"] == out_bits
    assert int(mult.product(torch.tensor(-3), torch.tensor(5))) == (-15 if out_bits >= 8 else 49)
