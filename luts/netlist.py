"""Gate-level netlists (from BLIF or structural Verilog) and their bit-parallel simulation.

A :class:`Netlist` is a set of :class:`Model`s; each holds single-output covers (``.names``)
and instances of other models (``.subckt``). :func:`simulate_multiplier` enumerates all
``2**(2n)`` operand pairs at once: every net is a vector of ``uint64`` words, one bit per input
pattern, and each model is evaluated in topological order (checked for loops, undriven nets,
multiple drivers and port mismatches, each error naming the file and line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CONSTANT_NETS = {"$false": False, "$true": True}  # Yosys ``write_blif -impltf`` constants


class NetlistError(ValueError):
    """A netlist is malformed or cannot be simulated; names the file and line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line = str(path), line


@dataclass
class Cover:
    """A single-output cover: ``output = OR(cubes)`` (on-set) or ``NOT OR(cubes)`` (off-set)."""

    inputs: list[str]
    output: str
    cubes: list[str]
    onset: bool
    line: int


@dataclass
class Instance:
    """An instance of another model with its ``formal -> actual`` pin map."""

    model: str
    pins: dict[str, str]
    line: int


@dataclass
class Model:
    """One ``.model`` / ``module``: ports, covers and instances."""

    name: str
    line: int
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    covers: list[Cover] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)


@dataclass
class Netlist:
    """Models by name; ``top`` is simulated (BLIF: the first model in the file)."""

    path: Path
    models: dict[str, Model]
    top: str
    _orders: dict[str, list[Cover | Instance]] = field(default_factory=dict, repr=False)

    def order(self, name: str, stack: tuple[str, ...] = ()) -> list[Cover | Instance]:
        """The checked topological order of model ``name``'s covers and instances."""
        if name not in self._orders:
            self._orders[name] = _topological_order(self, self.models[name], stack + (name,))
        return self._orders[name]


def _driven_nets(netlist: Netlist, model: Model, stack: tuple[str, ...]) -> dict[str, object]:
    """Map each net to the node driving it, checking instance pins and multiple drivers."""
    drivers: dict[str, object] = {net: "input" for net in model.inputs}
    for cover in model.covers:
        _drive(netlist, drivers, cover.output, cover, cover.line)
    for inst in model.instances:
        sub = netlist.models.get(inst.model)
        if sub is None:
            raise NetlistError(netlist.path, inst.line, f"instance of unknown model {inst.model!r}")
        if inst.model in stack:
            chain = " -> ".join((*stack, inst.model))
            raise NetlistError(netlist.path, inst.line, f"recursive hierarchy {chain}")
        ports = set(sub.inputs) | set(sub.outputs)
        unknown = [f for f in inst.pins if f not in ports]
        if unknown:
            raise NetlistError(
                netlist.path,
                inst.line,
                f"model {inst.model!r} has no port(s) {unknown}; "
                f"its ports are inputs {sub.inputs} and outputs {sub.outputs}",
            )
        missing = [p for p in sub.inputs if p not in inst.pins]
        if missing:
            raise NetlistError(
                netlist.path,
                inst.line,
                f"instance of {inst.model!r} leaves input port(s) {missing} unconnected "
                f"({len(inst.pins)} pins given, model has {len(sub.inputs)} inputs)",
            )
        for port in sub.outputs:
            if port in inst.pins:
                _drive(netlist, drivers, inst.pins[port], inst, inst.line)
    return drivers


def _drive(netlist: Netlist, drivers: dict[str, object], net: str, node: object, line: int) -> None:
    if net in CONSTANT_NETS:
        raise NetlistError(netlist.path, line, f"constant net {net!r} cannot be driven")
    if net in drivers:
        raise NetlistError(netlist.path, line, f"net {net!r} has more than one driver")
    drivers[net] = node


def _node_inputs(netlist: Netlist, node: Cover | Instance) -> list[str]:
    if isinstance(node, Cover):
        return node.inputs
    sub = netlist.models[node.model]
    return [node.pins[p] for p in sub.inputs]


def _topological_order(
    netlist: Netlist, model: Model, stack: tuple[str, ...]
) -> list[Cover | Instance]:
    drivers = _driven_nets(netlist, model, stack)
    nodes: list[Cover | Instance] = [*model.covers, *model.instances]
    for node in nodes:
        for net in _node_inputs(netlist, node):
            if net not in drivers and net not in CONSTANT_NETS:
                raise NetlistError(netlist.path, node.line, f"net {net!r} is used but never driven")
    for net in model.outputs:
        if net not in drivers and net not in CONSTANT_NETS:
            raise NetlistError(
                netlist.path, model.line, f"output {net!r} of model {model.name!r} is never driven"
            )
    index = {id(node): i for i, node in enumerate(nodes)}
    users: list[list[int]] = [[] for _ in nodes]
    pending = [0] * len(nodes)
    for i, node in enumerate(nodes):
        for net in _node_inputs(netlist, node):
            driver = drivers.get(net)
            if driver is not None and driver != "input":
                users[index[id(driver)]].append(i)
                pending[i] += 1
    ready = [i for i, count in enumerate(pending) if count == 0]
    order: list[Cover | Instance] = []
    while ready:
        i = ready.pop()
        order.append(nodes[i])
        for j in users[i]:
            pending[j] -= 1
            if pending[j] == 0:
                ready.append(j)
    if len(order) != len(nodes):
        stuck = min((n for i, n in enumerate(nodes) if pending[i] > 0), key=lambda n: n.line)
        what = (
            f"net {stuck.output!r}" if isinstance(stuck, Cover) else f"instance of {stuck.model!r}"
        )
        raise NetlistError(
            netlist.path, stuck.line, f"combinational loop in model {model.name!r} through {what}"
        )
    for node in order:
        if isinstance(node, Instance):
            netlist.order(node.model, stack)  # check sub-models (and catch recursion) up front
    return order


def _eval_cover(cover: Cover, values: dict[str, np.ndarray], ones: np.ndarray) -> np.ndarray:
    acc = np.zeros_like(ones)
    for cube in cover.cubes:
        term = ones.copy()
        for ch, net in zip(cube, cover.inputs, strict=True):
            if ch == "1":
                term &= values[net]
            elif ch == "0":
                term &= ~values[net]
        acc |= term
    return acc if cover.onset else ~acc


def _evaluate(
    netlist: Netlist,
    name: str,
    inputs: list[np.ndarray],
    ones: np.ndarray,
    stack: tuple[str, ...] = (),
) -> list[np.ndarray]:
    model = netlist.models[name]
    values: dict[str, np.ndarray] = dict(zip(model.inputs, inputs, strict=True))
    values["$false"], values["$true"] = np.zeros_like(ones), ones
    for node in netlist.order(name, stack):
        if isinstance(node, Cover):
            values[node.output] = _eval_cover(node, values, ones)
            continue
        sub = netlist.models[node.model]
        outs = _evaluate(
            netlist, node.model, [values[node.pins[p]] for p in sub.inputs], ones, stack + (name,)
        )
        for port, words in zip(sub.outputs, outs, strict=True):
            if port in node.pins:
                values[node.pins[port]] = words
    return [values[net] for net in model.outputs]


def multiplier_bits(netlist: Netlist) -> int:
    """Operand width of the top model: 2n inputs (A then B) and 2n outputs, n in 2..8."""
    top = netlist.models[netlist.top]
    n_in, n_out = len(top.inputs), len(top.outputs)
    if n_in % 2 or not 4 <= n_in <= 16 or n_out != n_in:
        raise NetlistError(
            netlist.path,
            top.line,
            f"a multiplier model needs 2n inputs (A then B, LSB first) and 2n outputs with n in "
            f"2..8; model {top.name!r} has {n_in} inputs and {n_out} outputs",
        )
    return n_in // 2


def simulate_multiplier(netlist: Netlist) -> np.ndarray:
    """The ``[2**n, 2**n]`` table of output codes (unsigned ``2n``-bit ints, int64) of the top.

    Entry ``[i, j]`` is the output for A bits = ``i`` and B bits = ``j``.
    """
    n = multiplier_bits(netlist)
    patterns = 1 << (2 * n)
    p = np.arange(max(patterns, 64), dtype=np.int64)  # pattern p = (A << n) | B, >= one word

    def words(bit: int) -> np.ndarray:
        return np.packbits(((p >> bit) & 1).astype(np.uint8), bitorder="little").view(np.uint64)

    inputs = [words(n + k) for k in range(n)] + [words(k) for k in range(n)]
    ones = np.full_like(inputs[0], np.iinfo(np.uint64).max)
    outputs = _evaluate(netlist, netlist.top, inputs, ones)
    value = np.zeros(patterns, dtype=np.int64)
    for k, out in enumerate(outputs):
        bits = np.unpackbits(out.view(np.uint8), bitorder="little")[:patterns]
        value |= bits.astype(np.int64) << k
    return value.reshape(1 << n, 1 << n)
