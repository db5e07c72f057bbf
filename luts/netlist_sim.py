"""A netlist as a multiplier: bind operands A and B to the top's ports, simulate every pair.

Orientation: ``codes[a][b]`` is the output for operand A = ``a`` (the row operand, the
activation side) and B = ``b``. Operands are bound, in this order of preference:

1. ``operands=("X", "Y")`` given by the caller: those input ports are A and B;
2. input ports named ``A`` and ``B`` (any case; Verilog vectors or BLIF ``A[i]`` bits);
3. exactly two input ports: the first is A, the second B (port order);
4. otherwise the input bits are split in half, A then B, LSB first.

The widths come from the ports; the binding used is recorded (``SimulatedTable.binding``).
All output bits, in port order and LSB first, form the output code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .netlist import Model, Netlist, NetlistError, evaluate_model
from .verilog_expr import Bits

MAX_INPUT_BITS = 20  # 2**20 operand pairs; EvoApproxLib's widest ask for 16
MAX_OUTPUT_BITS = 62
_BIT = re.compile(r"^(?P<name>.+)\[(?P<index>-?\d+)\]$")


@dataclass(frozen=True)
class SimulatedTable:
    """Output codes of every operand pair (unsigned ints of ``out_bits`` bits, int64)."""

    codes: np.ndarray
    bits_a: int
    bits_b: int
    out_bits: int
    binding: str

    def values(self, signed: bool) -> np.ndarray:
        """The products: codes as is, or (signed) the two's-complement value of their low
        ``bits_a + bits_b`` bits, whatever the output port's width."""
        if not signed:
            return self.codes
        n = self.bits_a + self.bits_b
        low = self.codes & ((1 << n) - 1)
        return np.where(low >= 1 << (n - 1), low - (1 << n), low)


def input_ports(model: Model) -> list[tuple[str, list[str]]]:
    """The model's input ports with their bits, LSB first (BLIF: grouped from ``X[i]`` names)."""
    if model.input_ports:
        return model.input_ports
    groups: dict[str, list[tuple[int, str]]] = {}
    for net in model.inputs:
        m = _BIT.match(net)
        name, index = (m["name"], int(m["index"])) if m else (net, 0)
        groups.setdefault(name, []).append((index, net))
    return [(name, [net for _, net in sorted(bits)]) for name, bits in groups.items()]


def _named(netlist: Netlist, model: Model, ports: dict[str, list[str]], want: str) -> str | None:
    exact = [p for p in ports if p == want]
    folded = exact or [p for p in ports if p.lower() == want.lower()]
    if len(folded) > 1:
        raise NetlistError(
            netlist.path, model.line, f"ports {folded} of {model.name!r} all match {want!r}"
        )
    return folded[0] if folded else None


def bind_operands(
    netlist: Netlist, operands: tuple[str, str] | None = None
) -> tuple[list[str], list[str], str]:
    """Input bits of operands A and B (LSB first) of the top model and how they were bound."""
    model = netlist.model(netlist.top)
    assert model is not None
    ports = dict(input_ports(model))
    names = [_named(netlist, model, ports, w) for w in operands or ("A", "B")]
    if operands and None in names:
        raise NetlistError(
            netlist.path,
            model.line,
            f"operands={operands}: model {model.name!r} has input ports {list(ports)}",
        )
    if None not in names:
        a, b = names
        others = [p for p in ports if p not in names]
        if others:
            raise NetlistError(
                netlist.path,
                model.line,
                f"model {model.name!r} has inputs {others} besides operands {a!r} and {b!r}; "
                "a multiplier's only inputs are its two operands",
            )
        how = "given ports" if operands else "ports named A and B"
        return (
            ports[a],
            ports[b],
            f"{how}: A={a!r} ({len(ports[a])} bits), B={b!r} ({len(ports[b])} bits)",
        )
    if len(ports) == 2:
        (a, bits_a), (b, bits_b) = ports.items()
        return bits_a, bits_b, f"port order (no ports named A and B): A={a!r}, B={b!r}"
    n = len(model.inputs)
    if n % 2 or n < 2:
        raise NetlistError(
            netlist.path,
            model.line,
            f"cannot tell operands A and B apart: model {model.name!r} has no ports named A and "
            f"B, not two input ports, and an odd number of input bits ({n}) to split in half; "
            "pass operands=(port_a, port_b)",
        )
    return (
        model.inputs[: n // 2],
        model.inputs[n // 2 :],
        f"split (no ports named A and B): first {n // 2} of {n} input bits are A, LSB first",
    )


def _packed(patterns: np.ndarray, bit: int) -> np.ndarray:
    return np.packbits(((patterns >> bit) & 1).astype(np.uint8), bitorder="little").view(np.uint64)


def simulate_multiplier(
    netlist: Netlist, operands: tuple[str, str] | None = None
) -> SimulatedTable:
    """Simulate the top model over all ``2**(bits_a + bits_b)`` operand pairs at once."""
    a, b, binding = bind_operands(netlist, operands)
    model = netlist.model(netlist.top)
    assert model is not None
    n_out = len(model.outputs)
    if len(a) + len(b) > MAX_INPUT_BITS or not 1 <= n_out <= MAX_OUTPUT_BITS:
        raise NetlistError(
            netlist.path,
            model.line,
            f"model {model.name!r}: {len(a)}x{len(b)} operand bits and {n_out} output bits; "
            f"expected at most {MAX_INPUT_BITS} operand bits and 1..{MAX_OUTPUT_BITS} outputs",
        )
    count = 1 << (len(a) + len(b))
    p = np.arange(max(count, 64), dtype=np.int64)  # pattern p = (A << bits_b) | B
    packed = {net: _packed(p, len(b) + k) for k, net in enumerate(a)}
    packed.update({net: _packed(p, k) for k, net in enumerate(b)})
    ops = Bits(len(next(iter(packed.values()))))
    try:
        outputs = evaluate_model(netlist, netlist.top, [packed[n] for n in model.inputs], ops)
    except RecursionError:
        raise NetlistError(
            netlist.path, None, "expression or hierarchy nested too deeply to evaluate"
        ) from None
    codes = np.zeros(count, dtype=np.int64)
    for k, words in enumerate(outputs):
        bits = np.unpackbits(words.view(np.uint8), bitorder="little")[:count]
        codes |= bits.astype(np.int64) << k
    table = codes.reshape(1 << len(a), 1 << len(b))
    return SimulatedTable(table, len(a), len(b), len(model.outputs), binding)
