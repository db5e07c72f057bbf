"""Gate-level simulation: the seed netlists reproduce their LUTs; every BLIF error is located."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from appmult_fx.luts.blif import parse_blif
from appmult_fx.luts.formats import load_multiplier
from appmult_fx.luts.netlist import NetlistError
from appmult_fx.luts.netlist_sim import simulate_multiplier
from appmult_fx.luts.registry import multiplier
from appmult_fx.luts.user_defined import from_netlist


def test_every_seed_netlist_reproduces_its_lut(shared: Path) -> None:
    blifs = sorted((shared / "appmults").rglob("*_sop.blif"))
    assert len(blifs) == 10
    hierarchical = 0
    for blif in blifs:
        mult = from_netlist(blif)
        expected = load_multiplier(blif.with_name(blif.name.replace("_sop.blif", "_lutfp.txt")))
        assert mult.name == expected.name
        assert mult.bits == expected.bits and not mult.signed
        assert torch.equal(mult.table, expected.table), blif
        hierarchical += len(parse_blif(blif).models) > 1
    assert hierarchical == 2  # the vert_trunc netlists use .subckt across several models


def table_blif(table: np.ndarray, bits: int, name: str = "m") -> str:
    """A flat BLIF of a table: each output bit is the cover of its on-set minterms."""
    a = [f"a{i}" for i in range(bits)]
    b = [f"b{i}" for i in range(bits)]
    outs = [f"o{k}" for k in range(2 * bits)]
    lines = [f".model {name}", ".inputs " + " ".join(a + b), ".outputs " + " ".join(outs)]
    codes = table.reshape(-1) & ((1 << 2 * bits) - 1)  # two's complement output code
    n = 1 << bits
    for k, out in enumerate(outs):
        lines.append(f".names {' '.join(a + b)} {out}")
        for p in np.flatnonzero((codes >> k) & 1):
            ia, ib = divmod(int(p), n)
            cube = "".join(str((ia >> i) & 1) for i in range(bits))
            cube += "".join(str((ib >> i) & 1) for i in range(bits))
            lines.append(f"{cube} 1")
    return "\n".join(lines + [".end", ""])


@pytest.mark.parametrize("name", ["mul3s_exact", "mul3u_trunc2", "mul4s_mitchell"])
def test_signed_and_unsigned_tables_round_trip_through_blif(tmp_path: Path, name: str) -> None:
    ref = multiplier(name)
    path = tmp_path / f"{name}_sop.blif"
    path.write_text(table_blif(ref.table.numpy().astype(np.int64), ref.bits))
    mult = from_netlist(path, signed=ref.signed)
    assert mult.name == name and torch.equal(mult.table, ref.table)


HALF_ADDER_2X2 = """\
# a 2x2 exact multiplier built from AND gates and a half-adder model
.model top   # first model = top
.inputs a0 a1 \\
        b0 b1
.outputs p0 p1 p2 p3
.names a0 b0 p0
11 1
.names a1 b0 x
11 1
.names a0 b1 y
11 1
.names a1 b1 z
11 1
.subckt ha X=x Y=y S=p1 C=c
.subckt ha X=z Y=c S=p2 C=p3
.end

.model ha
.inputs X Y
.outputs S C
.names X Y S
00 0
11 0
.names X Y C
11 1
.end
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.blif"
    path.write_text(text)
    return path


def test_hierarchy_off_set_comments_and_continuations(tmp_path: Path) -> None:
    table = simulate_multiplier(parse_blif(_write(tmp_path, HALF_ADDER_2X2))).codes
    v = np.arange(4)
    assert np.array_equal(table, v[:, None] * v[None, :])


def test_constants_dont_cares_and_yosys_constant_nets(tmp_path: Path) -> None:
    text = """.model k
.inputs a0 a1 b0 b1
.outputs o0 o1 o2 o3
.names one
 1
.names zero
.names a0 - o0_unused
.names a0 a1 o0
1- 1
.names one b1 o1
11 1
.names $true zero o2
10 1
.names $false o3
1 1
.end
"""
    text = text.replace(".names a0 - o0_unused\n", "")
    table = simulate_multiplier(parse_blif(_write(tmp_path, text))).codes
    v = np.arange(4)
    expected = (v[:, None] & 1) | (((v[None, :] >> 1) & 1) << 1) | 4
    assert np.array_equal(table, np.broadcast_to(expected, (4, 4)))


BAD_CASES = [
    ("loop in model 'top' through net 'y'", ".names x a0 y\n11 1\n.names y x\n1 1\n", 4),
    ("'nowhere' is used but never driven", ".names nowhere a0 y\n11 1\n", 4),
    ("unknown model 'adder'", ".subckt adder A=a0\n", 4),
    (".latch is not supported", ".latch a0 q 0\n", 4),
    ("expected a cube of 2 characters", ".names a0 b0 y\n1 1\n", 5),
    ("cube of 2 characters", ".names a0 b0 y\n1x 1\n", 5),
    ("mixes on-set", ".names a0 b0 y\n11 1\n00 0\n", 6),
    ("unknown BLIF directive '.bogus'", ".bogus\n", 4),
    ("net 'o0' has more than one driver", ".names a0 o0\n1 1\n", 6),
    ("outside a .names cover", ".inputs q\n11 1\n", 5),
    ("expected formal=actual", ".subckt top a0\n", 4),
]


@pytest.mark.parametrize(("message", "extra", "line"), BAD_CASES)
def test_bad_netlists_name_file_and_line(
    tmp_path: Path, message: str, extra: str, line: int
) -> None:
    head = ".model top\n.inputs a0 a1 b0 b1\n.outputs o0 o1 o2 o3\n"  # extra starts at line 4
    tail = ".names a0 b0 o0\n11 1\n.names o1\n.names o2\n.names o3\n.end\n"
    path = _write(tmp_path, head + extra + tail)
    with pytest.raises(NetlistError, match=re.escape(message)) as info:
        from_netlist(path)
    assert info.value.path == str(path)
    assert info.value.line == line, str(info.value)


def test_structural_errors(tmp_path: Path) -> None:
    sub = ".model s\n.inputs X Y\n.outputs Z\n.names X Y Z\n11 1\n.end\n"
    top = ".model top\n.inputs a0 a1 b0 b1\n.outputs o0 o1 o2 o3\n"
    consts = ".names o1\n.names o2\n.names o3\n"
    cases = {
        "leaves input port(s) ['Y'] unconnected": top + ".subckt s X=a0 Z=o0\n" + consts + sub,
        "has no port(s) ['Q']": top + ".subckt s X=a0 Y=b0 Q=o0\n" + consts + sub,
        "recursive hierarchy top -> s -> top": top
        + ".subckt s X=a0 Y=b0 Z=o0\n"
        + consts
        + ".end\n.model s\n.inputs X Y\n.outputs Z\n.subckt top a0=X a1=X b0=Y b1=Y o0=Z\n",
        "output 'o0' of model 'top' is never driven": top + consts,
        "odd number of input bits (3) to split in half": ".model top\n.inputs x y z\n"
        ".outputs o\n.names o\n",
        "has inputs ['c'] besides operands 'a' and 'b'": ".model top\n.inputs a b c\n"
        ".outputs o\n.names o\n",
        "no .model found": "# nothing\n",
        "defined twice": top + ".end\n.model top\n",
    }
    for message, text in cases.items():
        with pytest.raises(NetlistError, match=re.escape(message)):
            from_netlist(_write(tmp_path, text))
