"""Parsing Verilog expressions and net references into :mod:`.verilog_expr` trees."""

from __future__ import annotations

from pathlib import Path

from .verilog_expr import (
    CASTS,
    Binary,
    Concat,
    Cond,
    Const,
    Expr,
    Nets,
    Unary,
    width,
)
from .verilog_tokens import MAX_WIDTH, TokenStream, literal, tokenize

_LEVELS = [("||",), ("&&",), ("|",), ("^", "~^", "^~"), ("&",), ("+", "-"), ("*",)]
_UNARY = ("~", "!", "-", "+", "&", "~&", "|", "~|", "^", "~^", "^~")
_UNSUPPORTED = {
    "==", "!=", "===", "!==", "<", ">", "<=", ">=", "<<", ">>", "<<<", ">>>", "**", "/", "%",
}  # fmt: skip


def lvalue_bits(e: Expr) -> list[str] | None:
    """The net bits (LSB first) of an assignable expression, or None if it is not one."""
    if isinstance(e, Nets):
        return list(e.bits)
    if isinstance(e, Concat) and e.count == 1:
        bits: list[str] = []
        for part in reversed(e.parts):
            sub = lvalue_bits(part)
            if sub is None:
                return None
            bits += sub
        return bits
    return None


class ExpressionParser(TokenStream):
    """Expressions and net references, with each module's declared vectors in scope."""

    KEYWORDS = {
        "always", "initial", "reg", "parameter", "localparam", "generate", "endgenerate",
        "function", "task", "integer", "case", "if", "for", "begin", "end", "logic",
        "specify", "defparam", "genvar", "real", "time", "event", "tri", "primitive",
    }  # fmt: skip

    def __init__(self, path: Path, tokens: list) -> None:
        super().__init__(path, tokens)
        self.scopes: dict[str, dict[str, tuple[list[int] | None, bool]]] = {}
        self.scope: dict[str, tuple[list[int] | None, bool]] = {}

    @classmethod
    def from_text(cls, path: Path, text: str) -> ExpressionParser:
        """A parser over the tokens of ``text``."""
        return cls(path, tokenize(path, text))

    # -- declarations -------------------------------------------------------------------
    def begin_scope(self, module: str) -> None:
        """Start the net scope of ``module``."""
        self.scope = self.scopes[module] = {}

    def declare_net(self, name: str, indices: list[int] | None, is_signed: bool) -> None:
        """Declare a scalar (``indices`` None) or a vector (indices LSB first)."""
        old = self.scope.get(name)
        if old is not None and indices is None:
            indices = old[0]
        self.scope[name] = (indices, is_signed or (old is not None and old[1]))

    def bits(self, name: str) -> list[str]:
        """The bits of net ``name``, LSB first (undeclared names are implicit scalars)."""
        indices = self.scope.get(name, (None, False))[0]
        return [name] if indices is None else [f"{name}[{i}]" for i in indices]

    def scope_bits(self, module: str, name: str) -> list[str]:
        """The bits of net ``name`` of ``module``."""
        self.scope = self.scopes[module]
        return self.bits(name)

    def range(self) -> list[int] | None:
        """An optional ``[msb:lsb]``: the indices LSB first."""
        if not self.accept("["):
            return None
        msb = self.integer()
        self.expect(":")
        lsb = self.integer()
        self.expect("]")
        if abs(msb - lsb) >= MAX_WIDTH:
            raise self.fail(self.peek(-1).line, f"range [{msb}:{lsb}] wider than {MAX_WIDTH} bits")
        step = 1 if msb >= lsb else -1
        return list(range(lsb, msb + step, step))

    # -- expressions --------------------------------------------------------------------
    def binary_node(self, op: str, left: Expr, right: Expr) -> Expr:
        """A binary operator node (``^~`` is ``~^``)."""
        return Binary("~^" if op == "^~" else op, left, right)

    def unary_node(self, op: str, operand: Expr) -> Expr:
        """A unary operator node (``^~`` is ``~^``)."""
        return Unary("~^" if op == "^~" else op, operand)

    def expression(self) -> Expr:
        """``a ? b : c`` and everything below it."""
        cond = self.binary(0)
        if not self.accept("?"):
            return cond
        yes = self.expression()
        self.expect(":")
        return Cond(cond, yes, self.expression())

    def binary(self, level: int) -> Expr:
        if level == len(_LEVELS):
            left = self.unary()
            tok = None if self.at_end() else self.peek()
            if tok is not None and tok.text in _UNSUPPORTED:
                raise self.fail(tok.line, f"unsupported operator {tok.text!r}")
            return left
        left = self.binary(level + 1)
        while not self.at_end() and self.peek().text in _LEVELS[level]:
            op = self.next().text
            left = self.binary_node(op, left, self.binary(level + 1))
        return left

    def unary(self) -> Expr:
        tok = self.peek()
        if tok.kind == "op" and tok.text in _UNARY:
            self.next()
            return self.unary_node(tok.text, self.unary())
        return self.primary()

    def primary(self) -> Expr:
        tok = self.next()
        if tok.kind == "number":
            return literal(self.path, tok)
        if tok.text == "(":
            inner = self.expression()
            self.expect(")")
            return inner
        if tok.text == "{":
            return self.concatenation(tok.line)
        if tok.kind == "system":
            if tok.text not in CASTS:
                raise self.fail(tok.line, f"unsupported system function {tok.text!r}")
            self.expect("(")
            inner = self.expression()
            self.expect(")")
            return Unary(tok.text, inner)
        if tok.kind == "id" and tok.text not in self.KEYWORDS:
            return self.reference(tok.text, tok.line)
        raise self.fail(tok.line, f"expected an expression, got {tok.text!r}")

    def concatenation(self, line: int) -> Expr:
        first = self.expression()
        if self.accept("{"):  # replication {n{...}}
            if not isinstance(first, Const) or first.value < 1:
                raise self.fail(line, "a replication count must be a positive constant")
            inner = self.concatenation(line)
            self.expect("}")
            assert isinstance(inner, Concat)
            return self.checked(Concat(inner.parts, first.value), line)
        parts = [first]
        while self.accept(","):
            parts.append(self.expression())
        self.expect("}")
        for part in parts:
            if isinstance(part, Const) and part.unsized:
                raise self.fail(line, "unsized constant in a concatenation (give it a size)")
        return self.checked(Concat(tuple(parts)), line)

    def checked(self, e: Concat, line: int) -> Concat:
        """``e`` if it is at most :data:`MAX_WIDTH` bits wide."""
        if width(e) > MAX_WIDTH:
            raise self.fail(line, f"concatenation of {width(e)} bits (at most {MAX_WIDTH})")
        return e

    def reference(self, name: str, line: int) -> Expr:
        indices, is_signed = self.scope.get(name, (None, False))
        if not self.accept("["):
            return Nets(tuple(self.bits(name)), is_signed)
        if indices is None:
            raise self.fail(line, f"select of scalar net {name!r}")
        low, high = min(indices[0], indices[-1]), max(indices[0], indices[-1])
        first = self.integer()
        if self.accept("]"):
            if not low <= first <= high:
                raise self.fail(line, f"index {first} out of range [{high}:{low}] of {name!r}")
            return Nets((f"{name}[{first}]",))
        op = self.next()
        if op.text not in (":", "+:", "-:"):
            raise self.fail(op.line, f"expected ':', '+:' or '-:' in a select, got {op.text!r}")
        second = self.integer()
        self.expect("]")
        if op.text == "+:":
            first, second = first + second - 1, first
        elif op.text == "-:":
            second = first - second + 1
        lo, hi = min(first, second), max(first, second)
        if lo < low or hi > high:
            raise self.fail(line, f"part select [{first}:{second}] out of range of {name!r}")
        order = range(lo, hi + 1) if indices[0] <= indices[-1] else range(hi, lo - 1, -1)
        return Nets(tuple(f"{name}[{i}]" for i in order))
