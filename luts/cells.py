"""Standard-cell libraries for gate-level netlists: built-in OSU FreePDK45 cells, user cells.

EvoApproxLib's ``*_pdk45.v`` netlists instantiate cells of the OSU FreePDK45 library
(``gscl45nm``: ``AND2X1``, ``FAX1``, ``HAX1``, ...) without defining them. :data:`FREEPDK45`
holds every combinational cell of that library with the library's pin names and positional
pin order (inputs, then outputs). Sequential (``DFF*``, ``LATCH``) and tri-state (``TBUF*``)
cells are not combinational and are left out: instantiating one is an "unknown model" error.

``MUX2X1`` is ``Y = S ? B : A`` as EvoApproxLib defines it (its ``.v`` twins carry
``PDKGENMUX2X1: Y = (A & ~S) | (B & S)``, and its published error figures are reproduced only
with that function, e.g. EvoApprox8b ``mul8_090``: MAE 578.876740). The OSU Verilog model of
the cell is inverting; for netlists mapped to it pass
``cells={"MUX2X1": {"Y": "~(S ? A : B)"}}``.

A user's own cells: ``cells={"MAJ3": Cell({"Y": "(A & B) | (A & C) | (B & C)"})}`` or just
``cells={"MAJ3": {"Y": "(A & B) | (A & C) | (B & C)"}}``: every output pin is given as a
Verilog expression over the input pins (1-bit pins; ``~ & | ^ ?:`` and everything else
:mod:`.verilog` accepts). Inputs are the names the expressions use, in sorted order, unless
``Cell(outputs, inputs=("C", "A", "B"))`` fixes their positional order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .netlist import Model, NetlistError
from .verilog_expr import Assign, nets
from .verilog_parse_expr import ExpressionParser


@dataclass(frozen=True)
class Cell:
    """A combinational cell: output pin -> Verilog expression over the input pins."""

    outputs: Mapping[str, str]
    inputs: Sequence[str] | None = None

    def model(self, name: str) -> Model:
        """The cell as a netlist model (raises NetlistError on a bad expression)."""
        where = Path(f"<cell {name}>")
        exprs = {}
        for pin, text in self.outputs.items():
            parser = ExpressionParser.from_text(where, text)
            parser.begin_scope(name)
            exprs[pin] = parser.expression()
            if not parser.at_end():
                extra = parser.peek()
                raise parser.fail(extra.line, f"output {pin!r}: unexpected {extra.text!r}")
        used = sorted({n for e in exprs.values() for n in nets(e)})
        inputs = list(self.inputs) if self.inputs is not None else used
        unknown = sorted(set(used) - set(inputs))
        if unknown or not self.outputs or set(inputs) & set(self.outputs):
            raise NetlistError(
                where,
                None,
                f"cell {name!r}: outputs {list(self.outputs)} over inputs {inputs}; the "
                f"expressions use {used} (undeclared: {unknown}); pins must be distinct",
            )
        model = Model(name, 0, inputs=inputs, outputs=list(self.outputs))
        model.covers = [Assign([pin], e, 0) for pin, e in exprs.items()]
        model.input_ports = [(p, [p]) for p in inputs]
        model.output_ports = [(p, [p]) for p in self.outputs]
        return model


def _cells(table: dict[str, tuple[str, str]]) -> dict[str, Cell]:
    """``name -> (input pins, "OUT=expr; OUT2=expr")`` into Cells."""
    out = {}
    for name, (pins, functions) in table.items():
        outputs = dict(f.split("=", 1) for f in functions.split(";"))
        out[name] = Cell({k.strip(): v.strip() for k, v in outputs.items()}, tuple(pins.split()))
    return out


# OSU FreePDK45 (gscl45nm) combinational cells, from the library's Verilog models.
FREEPDK45: dict[str, Cell] = _cells(
    {
        "AND2X1": ("A B", "Y=A & B"),
        "AND2X2": ("A B", "Y=A & B"),
        "AOI21X1": ("A B C", "Y=~((A & B) | C)"),
        "AOI22X1": ("A B C D", "Y=~((A & B) | (C & D))"),
        "BUFX2": ("A", "Y=A"),
        "BUFX4": ("A", "Y=A"),
        "CLKBUF1": ("A", "Y=A"),
        "CLKBUF2": ("A", "Y=A"),
        "CLKBUF3": ("A", "Y=A"),
        "FAX1": ("A B C", "YC=(A & B) | (B & C) | (C & A); YS=A ^ B ^ C"),
        "HAX1": ("A B", "YC=A & B; YS=A ^ B"),
        "INVX1": ("A", "Y=~A"),
        "INVX2": ("A", "Y=~A"),
        "INVX4": ("A", "Y=~A"),
        "INVX8": ("A", "Y=~A"),
        "MUX2X1": ("A B S", "Y=S ? B : A"),  # EvoApproxLib's function, see the docstring
        "NAND2X1": ("A B", "Y=~(A & B)"),
        "NAND3X1": ("A B C", "Y=~(A & B & C)"),
        "NOR2X1": ("A B", "Y=~(A | B)"),
        "NOR3X1": ("A B C", "Y=~(A | B | C)"),
        "OAI21X1": ("A B C", "Y=~((A | B) & C)"),
        "OAI22X1": ("A B C D", "Y=~((A | B) & (C | D))"),
        "OR2X1": ("A B", "Y=A | B"),
        "OR2X2": ("A B", "Y=A | B"),
        "XNOR2X1": ("A B", "Y=~(A ^ B)"),
        "XOR2X1": ("A B", "Y=A ^ B"),
    }
)


@cache
def _builtin_models() -> dict[str, Model]:
    return {name: cell.model(name) for name, cell in FREEPDK45.items()}


def cell_library(cells: Mapping[str, Cell | Mapping[str, str]] | None = None) -> dict[str, Model]:
    """Models of the built-in cells plus ``cells`` (which take precedence on a name clash)."""
    merged: dict[str, Model] = dict(_builtin_models())
    for name, cell in (cells or {}).items():
        if not isinstance(cell, Cell):
            if not isinstance(cell, Mapping):
                raise TypeError(
                    f"cells[{name!r}] must be a Cell or a mapping output pin -> expression, "
                    f"got {type(cell).__name__}"
                )
            cell = Cell(dict(cell))
        merged[name] = cell.model(name)
    return merged
