"""A reader for structural Verilog (EvoApproxLib ``.v`` and PDK45 netlists) into a Netlist.

Supported: ``module`` with ANSI or non-ANSI ports; ``input``/``output``/``wire`` (optionally
``signed``, with ``[msb:lsb]`` ranges, ``wire x = expr;``), ``supply0``/``supply1``;
``assign`` of nets, bit and part selects (``x[3]``, ``x[7:4]``, ``x[i +: w]``) and
concatenations, with expressions of ``~ ! & | ^ ~^ ?: + - * && ||``, reductions, ``{a, b}``
and ``{n{a}}``, ``$signed``/``$unsigned``, sized and unsized literals, evaluated by
Verilog's width rules (:mod:`.verilog_expr`); gate primitives ``and or nand nor xor xnor
not buf`` with any number of terminals; instances of modules of the same file or of library
cells (:mod:`.cells`) with named or positional connections (expressions on input pins).
``//`` and ``/* */`` comments. Anything else (``always``, ``reg``, shifts, comparisons,
parameters, x/z literals, ...) is a :class:`~.netlist.NetlistError` naming the construct, the
file and the line. The top is the module no other module instantiates (the first such).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .netlist import Instance, Model, Netlist, NetlistError, find_model
from .verilog_expr import Assign, Const, Expr, width
from .verilog_parse_expr import ExpressionParser, lvalue_bits
from .verilog_tokens import Token

_GATES = {"and", "nand", "or", "nor", "xor", "xnor", "not", "buf"}
_DECLARATIONS = {"input", "output", "inout", "wire", "supply0", "supply1"}


@dataclass
class _Pending:
    """An instance whose connections are resolved once every module is known."""

    model: str
    named: dict[str, Expr | None] | None
    positional: list[Expr | None]
    line: int


@dataclass
class _Module:
    name: str
    line: int
    ports: list[str] = field(default_factory=list)
    directions: dict[str, str] = field(default_factory=dict)
    gates: list[Assign] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)


class _Parser(ExpressionParser):
    def modules(self) -> list[_Module]:
        found = []
        while not self.at_end():
            tok = self.next()
            if tok.text != "module":
                raise self.fail(tok.line, f"expected 'module', got {tok.text!r}")
            found.append(self.module(tok.line))
        return found

    def module(self, line: int) -> _Module:
        mod = _Module(self.ident().text, line)
        self.begin_scope(mod.name)
        if self.peek().text == "#":
            raise self.fail(line, f"parameterised module {mod.name!r} is not supported")
        if self.accept("("):
            direction, rng, is_signed = None, None, False
            while not self.accept(")"):
                tok = self.peek()
                if tok.text in ("input", "output", "inout"):
                    direction, rng, is_signed = self.port_kind(self.next())
                mod.ports.append(self.ident().text)
                if direction is not None:  # ANSI: `input [3:0] a, b, output c`
                    self.declare(mod, direction, [mod.ports[-1]], rng, is_signed)
                if not self.accept(","):
                    self.expect(")")
                    break
        self.expect(";")
        while not self.accept("endmodule"):
            self.item(mod)
        for port in mod.ports:
            if port not in mod.directions:
                raise self.fail(mod.line, f"port {port!r} of {mod.name!r} has no direction")
        mod.directions = {p: mod.directions[p] for p in mod.ports}
        return mod

    def declare(
        self, mod: _Module, kind: str, names: list[str], rng: list[int] | None, is_signed: bool
    ) -> None:
        for name in names:
            self.declare_net(name, rng, is_signed)
            if kind in ("input", "output"):
                mod.directions[name] = kind

    def port_kind(self, tok: Token) -> tuple[str, list[int] | None, bool]:
        """After ``input|output|wire...``: ``[wire] [signed] [range]``."""
        if tok.text == "inout":
            raise self.fail(tok.line, "inout ports are not supported")
        self.accept("wire")
        if self.peek().text in ("reg", "logic", "tri", "integer"):
            raise self.fail(tok.line, f"unsupported Verilog {self.peek().text!r}")
        is_signed = self.accept("signed")
        return tok.text, self.range(), is_signed

    def declaration(self, tok: Token, mod: _Module) -> None:
        """``input|output|wire|supply0|supply1 [wire] [signed] [range] name [= expr], ...;``."""
        kind, rng, is_signed = self.port_kind(tok)
        while True:
            name = self.ident()
            self.declare(mod, kind, [name.text], rng, is_signed)
            if self.peek().text == "[":
                raise self.fail(name.line, f"arrays ({name.text!r}) are not supported")
            if kind.startswith("supply"):
                value = Const(int(kind == "supply1"), 1)
                mod.gates.append(Assign(self.bits(name.text), value, tok.line))
            elif self.accept("="):
                mod.gates.append(Assign(self.bits(name.text), self.expression(), tok.line))
            if not self.accept(","):
                break
        self.expect(";")

    def item(self, mod: _Module) -> None:
        tok = self.next()
        if tok.text in _DECLARATIONS:
            self.declaration(tok, mod)
        elif tok.text == "assign":
            if self.peek().text in ("#", "("):
                raise self.fail(tok.line, "delays and drive strengths on assign are not supported")
            while True:
                target = lvalue_bits(self.expression())
                if target is None:
                    raise self.fail(tok.line, "the left side of assign must be nets or selects")
                self.expect("=")
                mod.gates.append(Assign(target, self.expression(), tok.line))
                if not self.accept(","):
                    break
            self.expect(";")
        elif tok.text in _GATES:
            self.gate(tok, mod)
        elif tok.kind == "id" and tok.text not in self.KEYWORDS:
            self.instance(tok, mod)
        else:
            raise self.fail(
                tok.line,
                f"unsupported Verilog {tok.text!r}: only structural code "
                "(declarations, assign, gate primitives, instances)",
            )

    def terminals(self, line: int) -> list[Expr]:
        self.expect("(")
        terms = [self.expression()]
        while self.accept(","):
            terms.append(self.expression())
        self.expect(")")
        for term in terms:
            if width(term) != 1:
                raise self.fail(line, f"gate terminals are 1 bit wide, got {width(term)} bits")
        return terms

    def gate(self, tok: Token, mod: _Module) -> None:
        if self.peek().text == "#":
            raise self.fail(tok.line, f"gate delays on {tok.text!r} are not supported")
        while True:
            if self.peek().kind == "id":
                self.next()  # optional instance name
            terms = self.terminals(tok.line)
            single = tok.text in ("not", "buf")
            outs, ins = (terms[:-1], terms[-1:]) if single else (terms[:1], terms[1:])
            if not ins or not outs:
                raise self.fail(tok.line, f"gate {tok.text!r} with {len(terms)} terminals")
            expr = ins[0]
            op = {"and": "&", "nand": "&", "or": "|", "nor": "|"}.get(tok.text, "^")
            for term in ins[1:]:
                expr = self.binary_node(op, expr, term)
            if tok.text in ("nand", "nor", "xnor", "not"):
                expr = self.unary_node("~", expr)
            for out in outs:
                bits = lvalue_bits(out)
                if bits is None:
                    raise self.fail(tok.line, f"output of gate {tok.text!r} must be a net")
                mod.gates.append(Assign(bits, expr, tok.line))
            if not self.accept(","):
                break
        self.expect(";")

    def connection(self) -> Expr | None:
        return None if self.peek().text in (")", ",") else self.expression()

    def instance(self, tok: Token, mod: _Module) -> None:
        if self.accept("#"):
            raise self.fail(tok.line, f"parameterised instance of {tok.text!r} is not supported")
        while True:
            self.ident()  # instance name
            if self.peek().text == "[":
                raise self.fail(tok.line, f"arrays of instances of {tok.text!r} are not supported")
            self.expect("(")
            named: dict[str, Expr | None] = {}
            positional: list[Expr | None] = []
            while not self.accept(")"):
                if self.accept("."):
                    port = self.ident()
                    if port.text in named:
                        raise self.fail(port.line, f"port {port.text!r} connected twice")
                    self.expect("(")
                    named[port.text] = self.connection()
                    self.expect(")")
                else:
                    positional.append(self.connection())
                if not self.accept(","):
                    self.expect(")")
                    break
            mod.pending.append(_Pending(tok.text, named or None, positional, tok.line))
            if not self.accept(","):
                break
        self.expect(";")


def _ports(sub: Model, file_module: _Module | None) -> tuple[list[str], dict[str, list[str]]]:
    """Port order and ``port -> bits`` of a model (library cells: inputs, then outputs)."""
    bits = dict(sub.input_ports + sub.output_ports)
    order = file_module.ports if file_module is not None else list(bits)
    return order, bits


def _resolve(
    path: Path,
    modules: dict[str, _Module],
    models: dict[str, Model],
    library: dict[str, Model],
    mod: _Module,
) -> None:
    """Turn ``mod``'s pending instances into Instances (expressions on pins become gates)."""
    model = models[mod.name]
    temp = 0
    for inst in mod.pending:
        sub = find_model(models, library, inst.model)
        if sub is None:
            model.instances.append(Instance(inst.model, {}, inst.line))  # reported as unknown
            continue
        order, port_bits = _ports(sub, modules.get(inst.model))
        if inst.named is None:
            if len(inst.positional) != len(order):
                raise NetlistError(
                    path,
                    inst.line,
                    f"{inst.model!r} has {len(order)} ports, {len(inst.positional)} connected",
                )
            named = dict(zip(order, inst.positional, strict=True))
        else:
            named = inst.named
        pins: dict[str, str] = {}
        for port, actual in named.items():
            if port not in port_bits:
                raise NetlistError(path, inst.line, f"model {inst.model!r} has no port {port!r}")
            if actual is None:
                continue
            formal = port_bits[port]
            unsized = isinstance(actual, Const) and actual.unsized
            if width(actual) != len(formal) and not unsized:
                raise NetlistError(
                    path,
                    inst.line,
                    f"port {port!r} of {inst.model!r}: {len(formal)} bits, "
                    f"{width(actual)} connected",
                )
            bits = lvalue_bits(actual)
            if formal[0] in sub.outputs:
                if bits is None:
                    raise NetlistError(
                        path, inst.line, f"output port {port!r} of {inst.model!r} drives a non-net"
                    )
            elif bits is None:
                temp += 1
                bits = [f"$t{temp}.{k}" for k in range(len(formal))]
                model.covers.append(Assign(bits, actual, inst.line))
            pins.update(zip(formal, bits, strict=True))
        model.instances.append(Instance(inst.model, pins, inst.line))


def _model(mod: _Module, scope_bits) -> Model:
    model = Model(mod.name, mod.line, covers=list(mod.gates))
    for port in mod.ports:
        bits = scope_bits(mod.name, port)
        if mod.directions[port] == "input":
            model.inputs.extend(bits)
            model.input_ports.append((port, bits))
        else:
            model.outputs.extend(bits)
            model.output_ports.append((port, bits))
    return model


def parse_verilog(
    path: str | Path, top: str | None = None, library: dict[str, Model] | None = None
) -> Netlist:
    """Parse a structural Verilog file; ``top`` names the module to simulate.

    ``library`` maps cell names to models (see :func:`.cells.cell_library`); modules the file
    defines take precedence over library cells of the same name.
    """
    path = Path(path)
    library = library or {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NetlistError(path, None, f"not a text file ({exc})") from exc
    parser = _Parser.from_text(path, text)
    try:
        parsed = parser.modules()
    except RecursionError:
        line = parser.peek().line if not parser.at_end() else None
        raise NetlistError(path, line, "expression nested too deeply") from None
    if not parsed:
        raise NetlistError(path, None, "no module found")
    modules: dict[str, _Module] = {}
    for mod in parsed:
        if mod.name in modules:
            raise NetlistError(path, mod.line, f"module {mod.name!r} defined twice")
        modules[mod.name] = mod
    models = {n: _model(m, parser.scope_bits) for n, m in modules.items()}
    for mod in parsed:
        _resolve(path, modules, models, library, mod)
    used = {p.model for m in parsed for p in m.pending}
    name = top or next((m.name for m in parsed if m.name not in used), parsed[0].name)
    if name not in modules:
        raise NetlistError(path, None, f"no module {name!r}; modules: {sorted(modules)}")
    return Netlist(path, models, name, library=library)
