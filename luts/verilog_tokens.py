"""Tokens of structural Verilog and a token stream that reports errors with file and line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .netlist import NetlistError
from .verilog_expr import Const

_TOKEN = re.compile(
    r"(?P<space>[ \t\r\f\v]+)|(?P<newline>\n)"
    r"|(?P<number>(?:[0-9][0-9_]*[ \t]*)?'[sS]?[bBoOdDhH][ \t]*[0-9a-zA-Z_?]+|[0-9][0-9_]*)"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_$]*|\\\S+)"
    r"|(?P<system>\$[A-Za-z_][A-Za-z0-9_$]*)"
    r"|(?P<directive>`[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>~&|~\||~\^|\^~|&&|\|\||===|!==|==|!=|<=|>=|<<<|>>>|<<|>>|\*\*|\+:|-:|\(\*|\*\)"
    r"|[()\[\]{};:,.=~&|^?#@+\-*/%!<>])"
)
_BASES = {"b": 2, "o": 8, "d": 10, "h": 16}
MAX_WIDTH = 1 << 16  # widest vector, literal or concatenation accepted (bits)


@dataclass
class Token:
    """One token: ``kind`` is id, number, system, directive or op."""

    kind: str
    text: str
    line: int


def tokenize(path: Path, text: str) -> list[Token]:
    """Split Verilog source into tokens (comments dropped, line numbers kept)."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    out: list[Token] = []
    line, pos = 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise NetlistError(path, line, f"unexpected character {text[pos]!r}")
        if m.lastgroup == "newline":
            line += 1
        elif m.lastgroup != "space":
            out.append(Token(m.lastgroup or "", m.group(0), line))
        pos = m.end()
    return out


def literal(path: Path, tok: Token) -> Const:
    """The value of a number token (``5``, ``'d3``, ``8'hFF``, ``4'sb1010``)."""
    text = tok.text.replace("_", "").replace(" ", "").replace("\t", "")
    if "'" not in text:
        return Const(int(text) & 0xFFFFFFFF, 32, signed=True, unsized=True)
    size, rest = text.split("'", 1)
    sign = rest[0] in "sS"
    rest = rest[1:] if sign else rest
    base, digits = _BASES[rest[0].lower()], rest[1:]
    if re.search(r"[xXzZ?]", digits):
        raise NetlistError(path, tok.line, f"literal {tok.text!r}: x/z bits are not supported")
    try:
        value = int(digits, base)
    except ValueError:
        raise NetlistError(path, tok.line, f"malformed literal {tok.text!r}") from None
    if not size:
        return Const(value & 0xFFFFFFFF, 32, signed=sign, unsized=True)
    width = int(size)
    if not 1 <= width <= MAX_WIDTH:
        raise NetlistError(path, tok.line, f"literal {tok.text!r}: size must be 1..{MAX_WIDTH}")
    return Const(value & ((1 << width) - 1), width, signed=sign)


class TokenStream:
    """A cursor over tokens with ``expect``/``accept`` helpers."""

    def __init__(self, path: Path, tokens: list[Token]) -> None:
        self.path, self.tokens, self.pos = path, tokens, 0

    def fail(self, line: int, message: str) -> NetlistError:
        """A NetlistError at ``line`` of this file."""
        return NetlistError(self.path, line, message)

    def at_end(self) -> bool:
        """Whether every token was consumed."""
        return self.pos >= len(self.tokens)

    def peek(self, ahead: int = 0) -> Token:
        """The next token (``ahead`` further), without consuming it."""
        if self.pos + ahead >= len(self.tokens):
            last = self.tokens[-1].line if self.tokens else 1
            raise self.fail(last, "unexpected end of file")
        return self.tokens[self.pos + ahead]

    def next(self) -> Token:
        """Consume and return the next token."""
        tok = self.peek()
        self.pos += 1
        return tok

    def expect(self, text: str) -> Token:
        """Consume the next token, which must be ``text``."""
        tok = self.next()
        if tok.text != text:
            raise self.fail(tok.line, f"expected {text!r}, got {tok.text!r}")
        return tok

    def accept(self, text: str) -> bool:
        """Consume the next token if it is ``text``."""
        if not self.at_end() and self.tokens[self.pos].text == text:
            self.pos += 1
            return True
        return False

    def ident(self) -> Token:
        """Consume a name."""
        tok = self.next()
        if tok.kind != "id":
            raise self.fail(tok.line, f"expected a name, got {tok.text!r}")
        return tok

    def integer(self) -> int:
        """Consume a constant integer (an index or a count)."""
        tok = self.next()
        if tok.kind != "number":
            raise self.fail(
                tok.line, f"expected a constant integer, got {tok.text!r} (no variable indices)"
            )
        return literal(self.path, tok).value
