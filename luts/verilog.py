"""A reader for gate-level structural Verilog (the EvoApproxLib ``.v`` style) into a Netlist.

Supported: ``module`` with ANSI or non-ANSI port lists, ``input``/``output``/``wire``
declarations with ``[msb:lsb]`` ranges, ``assign`` of single bits with ``~ & | ^ ~^``, ``?:``
and parentheses, 1-bit constants (``1'b0``, ``1'b1``, ``0``, ``1``), gate primitives
(``and or nand nor xor xnor not buf``) and module instances with named (``.P(net)``) or
positional connections, whole vectors connected to vector ports of equal width. ``//`` and
``/* */`` comments. Behavioural code (``always``, ``reg``, arithmetic) is rejected with the
file and line. The first module is the top; its ports, in port-list order and LSB first within
a vector, are the multiplier's inputs (A then B) and outputs. Library cells that the file
does not define (e.g. PDK45 ``AND2X1``) are reported as unknown models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .netlist import Cover, Instance, Model, Netlist, NetlistError

_TOKEN = re.compile(
    r"(?P<space>[ \t\r\f\v]+)|(?P<newline>\n)|(?P<id>[A-Za-z_][A-Za-z0-9_$]*|\\\S+)"
    r"|(?P<number>[0-9]*'[sS]?[bBhHdDoO][0-9a-fA-F_xXzZ]+|[0-9]+)"
    r"|(?P<op>~\^|\^~|[()\[\]{};:,.=~&|^?#@])"
)
_PRIMITIVES = {
    "and": (["1"], True, "and"),
    "nand": (["1"], False, "and"),
    "or": (["1"], True, "or"),
    "nor": (["1"], False, "or"),
    "xor": (["1"], True, "xor"),
    "xnor": (["1"], False, "xor"),
    "not": (["0"], True, "buf"),
    "buf": (["1"], True, "buf"),
}
_REJECTED = {
    "always",
    "initial",
    "reg",
    "parameter",
    "localparam",
    "generate",
    "function",
    "task",
    "integer",
    "case",
    "if",
    "for",
}


@dataclass
class _Token:
    kind: str
    text: str
    line: int


@dataclass
class _Pending:
    """An instance whose connections are resolved once every module is known."""

    model: str
    named: dict[str, list[str]] | None
    positional: list[list[str]]
    line: int


@dataclass
class _Module:
    name: str
    line: int
    ports: list[str] = field(default_factory=list)
    directions: dict[str, str] = field(default_factory=dict)
    ranges: dict[str, list[int]] = field(default_factory=dict)  # vector -> indices, LSB first
    covers: list[Cover] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)

    def bits(self, name: str) -> list[str]:
        if name in self.ranges:
            return [f"{name}[{i}]" for i in self.ranges[name]]
        return [name]


def _tokens(path: Path, text: str) -> list[_Token]:
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    out: list[_Token] = []
    line, pos = 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise NetlistError(
                path, line, f"unexpected character {text[pos]!r} (structural Verilog: ~ & | ^ ?:)"
            )
        if m.lastgroup == "newline":
            line += 1
        elif m.lastgroup != "space":
            out.append(_Token(m.lastgroup or "", m.group(0), line))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, path: Path, tokens: list[_Token]) -> None:
        self.path, self.tokens, self.pos = path, tokens, 0
        self.module: _Module | None = None
        self.temp = 0

    # -- token helpers ------------------------------------------------------------------
    def peek(self) -> _Token:
        if self.pos >= len(self.tokens):
            last = self.tokens[-1].line if self.tokens else 1
            raise NetlistError(self.path, last, "unexpected end of file")
        return self.tokens[self.pos]

    def next(self) -> _Token:
        tok = self.peek()
        self.pos += 1
        return tok

    def expect(self, text: str) -> _Token:
        tok = self.next()
        if tok.text != text:
            raise NetlistError(self.path, tok.line, f"expected {text!r}, got {tok.text!r}")
        return tok

    def accept(self, text: str) -> bool:
        if self.pos < len(self.tokens) and self.tokens[self.pos].text == text:
            self.pos += 1
            return True
        return False

    def ident(self) -> _Token:
        tok = self.next()
        if tok.kind != "id":
            raise NetlistError(self.path, tok.line, f"expected a name, got {tok.text!r}")
        return tok

    def number(self) -> int:
        tok = self.next()
        if tok.kind != "number" or "'" in tok.text:
            raise NetlistError(self.path, tok.line, f"expected an integer, got {tok.text!r}")
        return int(tok.text)

    # -- structure ----------------------------------------------------------------------
    def modules(self) -> list[_Module]:
        found = []
        while self.pos < len(self.tokens):
            tok = self.next()
            if tok.text != "module":
                raise NetlistError(self.path, tok.line, f"expected 'module', got {tok.text!r}")
            found.append(self.parse_module(tok.line))
        return found

    def range(self) -> list[int] | None:
        if not self.accept("["):
            return None
        msb = self.number()
        self.expect(":")
        lsb = self.number()
        self.expect("]")
        step = 1 if msb >= lsb else -1
        return list(range(lsb, msb + step, step))

    def declare(self, direction: str, names: list[str], indices: list[int] | None) -> None:
        mod = self.module
        assert mod is not None
        for name in names:
            if direction != "wire":
                mod.directions[name] = direction
            if indices is not None:
                mod.ranges[name] = indices

    def parse_module(self, line: int) -> _Module:
        self.module = mod = _Module(self.ident().text, line)
        if self.accept("("):
            direction, indices = None, None
            while not self.accept(")"):
                if self.peek().text in ("input", "output"):
                    direction = self.next().text
                    self.accept("wire")
                    indices = self.range()
                name = self.ident().text
                mod.ports.append(name)
                if direction is not None:
                    self.declare(direction, [name], indices)
                if not self.accept(","):
                    self.expect(")")
                    break
        self.expect(";")
        while not self.accept("endmodule"):
            self.item()
        for port in mod.ports:
            if port not in mod.directions:
                raise NetlistError(
                    self.path, mod.line, f"port {port!r} of {mod.name!r} has no direction"
                )
        return mod

    def item(self) -> None:
        tok = self.next()
        if tok.text in ("input", "output", "wire"):
            self.accept("wire")
            indices = self.range()
            names = [self.ident().text]
            while self.accept(","):
                names.append(self.ident().text)
            self.expect(";")
            self.declare(tok.text, names, indices)
        elif tok.text == "assign":
            self.assign(tok.line)
            while self.accept(","):
                self.assign(tok.line)
            self.expect(";")
        elif tok.text in _PRIMITIVES:
            self.primitive(tok)
        elif tok.text in _REJECTED or tok.kind != "id":
            raise NetlistError(
                self.path,
                tok.line,
                f"unsupported Verilog {tok.text!r}: only structural code (assign, instances)",
            )
        else:
            self.instance(tok)

    # -- expressions --------------------------------------------------------------------
    def new_cover(self, inputs: list[str], cubes: list[str], onset: bool, line: int) -> str:
        self.temp += 1
        net = f"$v{self.temp}"
        assert self.module is not None
        self.module.covers.append(Cover(inputs, net, cubes, onset, line))
        return net

    def reference(self) -> str:
        tok = self.next()
        if tok.kind == "number":
            value = tok.text.split("'")[-1][1:].replace("_", "") if "'" in tok.text else tok.text
            if value not in ("0", "1"):
                raise NetlistError(
                    self.path, tok.line, f"only 1-bit constants are supported, got {tok.text}"
                )
            return "$true" if value == "1" else "$false"
        if tok.kind != "id":
            raise NetlistError(self.path, tok.line, f"expected a net, got {tok.text!r}")
        if self.accept("["):
            index = self.number()
            self.expect("]")
            return f"{tok.text}[{index}]"
        return tok.text

    def primary(self) -> str:
        if self.accept("("):
            net = self.expression()
            self.expect(")")
            return net
        line = self.peek().line
        if self.accept("~"):
            return self.new_cover([self.primary()], ["0"], True, line)
        net = self.reference()
        assert self.module is not None
        if net in self.module.ranges and len(self.module.ranges[net]) > 1:
            raise NetlistError(self.path, line, f"vector {net!r} used without a bit select")
        return net

    def binary(self, level: int) -> str:
        ops = [("|",), ("^", "~^", "^~"), ("&",)]
        if level == len(ops):
            return self.primary()
        left = self.binary(level + 1)
        while self.pos < len(self.tokens) and self.peek().text in ops[level]:
            op = self.next()
            right = self.binary(level + 1)
            cubes = {"|": ["1-", "-1"], "&": ["11"]}.get(op.text, ["10", "01"])
            onset = op.text not in ("~^", "^~")
            left = self.new_cover([left, right], cubes, onset, op.line)
        return left

    def expression(self) -> str:
        cond = self.binary(0)
        if not self.accept("?"):
            return cond
        line = self.tokens[self.pos - 1].line
        when_true = self.expression()
        self.expect(":")
        when_false = self.expression()
        return self.new_cover([cond, when_true, when_false], ["11-", "0-1"], True, line)

    def assign(self, line: int) -> None:
        target = self.reference()
        self.expect("=")
        source = self.expression()
        assert self.module is not None
        self.module.covers.append(Cover([source], target, ["1"], True, line))

    def primitive(self, tok: _Token) -> None:
        cube, onset, kind = _PRIMITIVES[tok.text]
        if self.peek().kind == "id":
            self.next()  # optional instance name
        self.expect("(")
        nets = [self.expression()]
        while self.accept(","):
            nets.append(self.expression())
        self.expect(")")
        self.expect(";")
        out, ins = nets[0], nets[1:]
        if not ins or (kind == "buf" and len(ins) != 1):
            raise NetlistError(self.path, tok.line, f"gate {tok.text!r} with {len(ins)} inputs")
        if kind == "and":
            cubes = ["1" * len(ins)]
        elif kind == "or":
            cubes = ["-" * i + "1" + "-" * (len(ins) - i - 1) for i in range(len(ins))]
        elif kind == "xor":
            cubes = [
                format(v, f"0{len(ins)}b") for v in range(2 ** len(ins)) if bin(v).count("1") % 2
            ]
        else:
            cubes = cube
        assert self.module is not None
        self.module.covers.append(Cover(ins, out, cubes, onset, tok.line))

    def connection(self) -> list[str]:
        """A port's actual: a bare (possibly vector) name stays a name list, else one net."""
        tok = self.peek()
        nxt = self.tokens[self.pos + 1].text if self.pos + 1 < len(self.tokens) else ""
        assert self.module is not None
        if tok.kind == "id" and nxt in (")", ","):
            self.next()
            return self.module.bits(tok.text)
        return [self.expression()]

    def instance(self, tok: _Token) -> None:
        if self.accept("#"):
            raise NetlistError(self.path, tok.line, "parameterised instances are not supported")
        self.ident()  # instance name
        self.expect("(")
        named: dict[str, list[str]] = {}
        positional: list[list[str]] = []
        while not self.accept(")"):
            if self.accept("."):
                port = self.ident().text
                self.expect("(")
                named[port] = [] if self.peek().text == ")" else self.connection()
                self.expect(")")
            else:
                positional.append(self.connection())
            if not self.accept(","):
                self.expect(")")
                break
        self.expect(";")
        assert self.module is not None
        self.module.pending.append(
            _Pending(tok.text, named if named else None, positional, tok.line)
        )


def _resolve(path: Path, modules: dict[str, _Module], mod: _Module) -> Model:
    model = Model(mod.name, mod.line, covers=list(mod.covers))
    for port in mod.ports:
        target = model.inputs if mod.directions[port] == "input" else model.outputs
        target.extend(mod.bits(port))
    for inst in mod.pending:
        sub = modules.get(inst.model)
        if sub is None:
            model.instances.append(Instance(inst.model, {}, inst.line))  # reported as unknown
            continue
        if inst.named is None:
            if len(inst.positional) != len(sub.ports):
                raise NetlistError(
                    path,
                    inst.line,
                    f"{inst.model!r} has {len(sub.ports)} ports, {len(inst.positional)} connected",
                )
            named = dict(zip(sub.ports, inst.positional, strict=True))
        else:
            named = inst.named
        pins: dict[str, str] = {}
        for port, actual in named.items():
            if port not in sub.directions:
                raise NetlistError(path, inst.line, f"model {inst.model!r} has no port {port!r}")
            formal = sub.bits(port)
            if actual and len(actual) != len(formal):
                raise NetlistError(
                    path,
                    inst.line,
                    f"port {port!r} of {inst.model!r}: {len(formal)} bits, {len(actual)} connected",
                )
            pins.update(zip(formal, actual, strict=False))
        model.instances.append(Instance(inst.model, pins, inst.line))
    return model


def parse_verilog(path: str | Path, top: str | None = None) -> Netlist:
    """Parse a structural Verilog file; ``top`` names the module to simulate (default first)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NetlistError(path, None, f"not a text file ({exc})") from exc
    parsed = _Parser(path, _tokens(path, text)).modules()
    if not parsed:
        raise NetlistError(path, None, "no module found")
    modules: dict[str, _Module] = {}
    for mod in parsed:
        if mod.name in modules:
            raise NetlistError(path, mod.line, f"module {mod.name!r} defined twice")
        modules[mod.name] = mod
    name = top or parsed[0].name
    if name not in modules:
        raise NetlistError(path, None, f"no module {name!r}; modules: {sorted(modules)}")
    models = {n: _resolve(path, modules, m) for n, m in modules.items()}
    return Netlist(path, models, name)
