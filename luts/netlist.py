"""Gate-level netlists (from BLIF or structural Verilog) and their bit-parallel evaluation.

A :class:`Netlist` is a set of :class:`Model`s; each holds gates (BLIF single-output covers,
Verilog assignments: anything with ``inputs``, ``outputs`` and ``evaluate``) and instances of
other models (``.subckt``, module and cell instances). Models the file does not define are
looked up in the netlist's cell ``library``. :func:`evaluate_model` runs a model over packed
input patterns: every net bit is a vector of ``uint64`` words, one bit per pattern, and each
model is evaluated once in topological order (checked for loops, undriven nets, multiple
drivers and port mismatches, each error naming the file and line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .verilog_expr import Bits

CONSTANT_NETS = {"$false": False, "$true": True}  # Yosys ``write_blif -impltf`` constants


class NetlistError(ValueError):
    """A netlist is malformed or cannot be simulated; names the file and line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line = str(path), line


class Gate(Protocol):
    """A combinational node: reads ``inputs``, drives ``outputs`` (net bits)."""

    line: int
    inputs: list[str]

    @property
    def outputs(self) -> list[str]: ...

    def evaluate(self, values: dict[str, np.ndarray], ops: Bits) -> list[np.ndarray]: ...


@dataclass
class Cover:
    """A single-output cover: ``output = OR(cubes)`` (on-set) or ``NOT OR(cubes)`` (off-set)."""

    inputs: list[str]
    output: str
    cubes: list[str]
    onset: bool
    line: int

    @property
    def outputs(self) -> list[str]:
        """The one net this cover drives."""
        return [self.output]

    def evaluate(self, values: dict[str, np.ndarray], ops: Bits) -> list[np.ndarray]:
        """The output's packed value."""
        acc = ops.zero
        for cube in self.cubes:
            term = ops.one
            for ch, net in zip(cube, self.inputs, strict=True):
                if ch == "1":
                    term = ops.and_(term, values[net])
                elif ch == "0":
                    term = ops.and_(term, ops.inv(values[net]))
            acc = ops.or_(acc, term)
        return [acc if self.onset else ops.inv(acc)]


@dataclass
class Instance:
    """An instance of another model with its ``formal -> actual`` pin map (net bits)."""

    model: str
    pins: dict[str, str]
    line: int


Node = Gate | Instance


@dataclass
class Model:
    """One ``.model`` / ``module`` / cell: ports, gates and instances.

    ``inputs``/``outputs`` are port bits in port order, LSB first within a vector;
    ``input_ports``/``output_ports`` group them by port name (BLIF: grouped from ``X[i]``).
    """

    name: str
    line: int
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    covers: list[Gate] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    input_ports: list[tuple[str, list[str]]] = field(default_factory=list)
    output_ports: list[tuple[str, list[str]]] = field(default_factory=list)


@dataclass
class Netlist:
    """Models by name; ``top`` is simulated; ``library`` holds cells the file instantiates."""

    path: Path
    models: dict[str, Model]
    top: str
    library: dict[str, Model] = field(default_factory=dict)
    _orders: dict[str, list[Node]] = field(default_factory=dict, repr=False)

    def model(self, name: str) -> Model | None:
        """The model ``name`` (see :func:`find_model`), or None."""
        return find_model(self.models, self.library, name)

    def order(self, name: str, stack: tuple[str, ...] = ()) -> list[Node]:
        """The checked topological order of model ``name``'s gates and instances."""
        if name not in self._orders:
            model = self.model(name)
            assert model is not None
            self._orders[name] = _topological_order(self, model, stack + (name,))
        return self._orders[name]

    def cell_count(self, name: str | None = None) -> int:
        """Leaf cells (library cells, or file modules without instances) under model ``name``
        (default: the top), hierarchy counted; a ``.v`` and its ``_pdk45.v`` twin agree."""
        model = self.model(name or self.top)
        assert model is not None
        total = 0
        for inst in model.instances:
            sub = self.model(inst.model)
            assert sub is not None
            total += self.cell_count(inst.model) if sub.instances else 1
        return total


def find_model(models: dict[str, Model], library: dict[str, Model], name: str) -> Model | None:
    """A model defined in the file, else a library cell, else an EvoApproxLib alias.

    EvoApproxLib's ``.v`` files call cells ``PDKGEN<cell>`` and, through repeated renaming,
    also instantiate names they never define (``NPDKGEPDKGENNAND2X1`` for ``NAND2X1``,
    ``XNPDKGENOR2X1`` for ``XNOR2X1``, ``XPDKGENOR2X1`` for ``XOR2X1``): a name found nowhere
    is looked up again in the library with every ``PDKGEN`` removed.
    """
    found = models.get(name) or library.get(name)
    if found is None and "PDKGEN" in name:
        plain = name
        while "PDKGEN" in plain:
            plain = plain.replace("PDKGEN", "")
        found = library.get(plain)
    return found


def _check_instance(netlist: Netlist, inst: Instance, stack: tuple[str, ...]) -> Model:
    sub = netlist.model(inst.model)
    if sub is None:
        raise NetlistError(
            netlist.path,
            inst.line,
            f"instance of unknown model {inst.model!r}: define the module in the file or pass "
            "its function with cells={...}",
        )
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
    return sub


def _node_io(netlist: Netlist, node: Node) -> tuple[list[str], list[str]]:
    if isinstance(node, Instance):
        sub = netlist.model(node.model)
        assert sub is not None
        return [node.pins[p] for p in sub.inputs], [
            node.pins[p] for p in sub.outputs if p in node.pins
        ]
    return node.inputs, node.outputs


def _drivers(netlist: Netlist, model: Model, nodes: list[Node]) -> dict[str, int]:
    """Map each driven net to the index of its node (-1: a model input)."""
    drivers = dict.fromkeys(model.inputs, -1)
    for i, node in enumerate(nodes):
        for net in _node_io(netlist, node)[1]:
            if net in CONSTANT_NETS:
                raise NetlistError(
                    netlist.path, node.line, f"constant net {net!r} cannot be driven"
                )
            if net in drivers:
                raise NetlistError(netlist.path, node.line, f"net {net!r} has more than one driver")
            drivers[net] = i
    return drivers


def _topological_order(netlist: Netlist, model: Model, stack: tuple[str, ...]) -> list[Node]:
    nodes: list[Node] = [*model.covers, *model.instances]
    for inst in model.instances:
        _check_instance(netlist, inst, stack)
    drivers = _drivers(netlist, model, nodes)
    users: list[list[int]] = [[] for _ in nodes]
    pending = [0] * len(nodes)
    for i, node in enumerate(nodes):
        for net in dict.fromkeys(_node_io(netlist, node)[0]):
            driver = drivers.get(net)
            if driver is None and net not in CONSTANT_NETS:
                raise NetlistError(netlist.path, node.line, f"net {net!r} is used but never driven")
            if driver is not None and driver >= 0:
                users[driver].append(i)
                pending[i] += 1
    for net in model.outputs:
        if net not in drivers and net not in CONSTANT_NETS:
            raise NetlistError(
                netlist.path, model.line, f"output {net!r} of model {model.name!r} is never driven"
            )
    ready = [i for i, count in enumerate(pending) if count == 0]
    order: list[Node] = []
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
            f"instance of {stuck.model!r}"
            if isinstance(stuck, Instance)
            else f"net {stuck.outputs[0]!r}"
        )
        raise NetlistError(
            netlist.path, stuck.line, f"combinational loop in model {model.name!r} through {what}"
        )
    for node in order:
        if isinstance(node, Instance):
            netlist.order(node.model, stack)  # check sub-models (and catch recursion) up front
    return order


def evaluate_model(
    netlist: Netlist,
    name: str,
    inputs: list[np.ndarray],
    ops: Bits,
    stack: tuple[str, ...] = (),
) -> list[np.ndarray]:
    """Packed values of model ``name``'s output bits for packed values of its input bits."""
    model = netlist.model(name)
    assert model is not None
    values: dict[str, np.ndarray] = dict(zip(model.inputs, inputs, strict=True))
    values["$false"], values["$true"] = ops.zero, ops.one
    for node in netlist.order(name, stack):
        if isinstance(node, Instance):
            sub = netlist.model(node.model)
            assert sub is not None
            outs = evaluate_model(
                netlist,
                node.model,
                [values[node.pins[p]] for p in sub.inputs],
                ops,
                stack + (name,),
            )
            for port, words in zip(sub.outputs, outs, strict=True):
                if port in node.pins:
                    values[node.pins[port]] = words
            continue
        for net, words in zip(node.outputs, node.evaluate(values, ops), strict=True):
            values[net] = words
    return [values[net] for net in model.outputs]
