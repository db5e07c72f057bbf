"""Verilog expressions: a small AST, IEEE 1364 width/sign rules and bit-sliced evaluation.

Every net bit is a packed ``uint64`` array (one bit per input pattern), so an expression
over ``w``-bit vectors evaluates to ``w`` such arrays, LSB first, in one pass.

Width rules (IEEE 1364-2005 5.4/5.5): ``~ - + & | ^ ~^ * ?:`` operands are context-determined
(extended to the width of the whole expression, sign-extended only if *every* operand is
signed); reductions, ``!``, ``&&``, ``||``, the condition of ``?:``, concatenation parts and
``$signed``/``$unsigned`` operands are self-determined; reductions, logical operators,
concatenations and selects are unsigned. An assignment evaluates its right-hand side at the
target's width: every supported operator's low ``k`` result bits depend only on the low ``k``
operand bits, so this equals evaluating at ``max(lhs, rhs)`` bits and truncating, as the
standard says, and a narrower right-hand side is zero- or sign-extended.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Nets:
    """A reference to net bits (a vector, a bit or a part select), LSB first."""

    bits: tuple[str, ...]
    signed: bool = False


@dataclass(frozen=True)
class Const:
    """A literal: ``value`` in ``[0, 2**width)``; unsized literals are 32 bits wide."""

    value: int
    width: int
    signed: bool = False
    unsized: bool = False


@dataclass(frozen=True)
class Unary:
    """``~ - +`` (context-determined), reductions ``& ~& | ~| ^ ~^``, ``!``, ``$signed``."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class Binary:
    """``+ - * & | ^ ~^`` (context-determined) and ``&& ||`` (1 bit)."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Cond:
    """``cond ? yes : no``."""

    cond: Expr
    yes: Expr
    no: Expr


@dataclass(frozen=True)
class Concat:
    """``{a, b, ...}`` (first part = most significant), or ``{count{a, ...}}``."""

    parts: tuple[Expr, ...]
    count: int = 1


Expr = Nets | Const | Unary | Binary | Cond | Concat

CONTEXT_UNARY = ("~", "-", "+")
REDUCTIONS = ("&", "~&", "|", "~|", "^", "~^", "!")
CASTS = ("$signed", "$unsigned")
CONTEXT_BINARY = ("+", "-", "*", "&", "|", "^", "~^")
LOGICAL_BINARY = ("&&", "||")


def width(e: Expr) -> int:
    """The self-determined width of ``e``."""
    if isinstance(e, Nets):
        return len(e.bits)
    if isinstance(e, Const):
        return e.width
    if isinstance(e, Unary):
        return 1 if e.op in REDUCTIONS else width(e.operand)
    if isinstance(e, Binary):
        return 1 if e.op in LOGICAL_BINARY else max(width(e.left), width(e.right))
    if isinstance(e, Cond):
        return max(width(e.yes), width(e.no))
    return e.count * sum(width(p) for p in e.parts)


def signed(e: Expr) -> bool:
    """Whether ``e`` is a signed expression."""
    if isinstance(e, Nets | Const):
        return e.signed
    if isinstance(e, Unary):
        if e.op in CASTS:
            return e.op == "$signed"
        return e.op in CONTEXT_UNARY and signed(e.operand)
    if isinstance(e, Binary):
        return e.op in CONTEXT_BINARY and signed(e.left) and signed(e.right)
    if isinstance(e, Cond):
        return signed(e.yes) and signed(e.no)
    return False


def nets(e: Expr) -> Iterable[str]:
    """Every net bit ``e`` reads."""
    if isinstance(e, Nets):
        yield from e.bits
    elif isinstance(e, Unary):
        yield from nets(e.operand)
    elif isinstance(e, Binary):
        yield from nets(e.left)
        yield from nets(e.right)
    elif isinstance(e, Cond):
        for part in (e.cond, e.yes, e.no):
            yield from nets(part)
    elif isinstance(e, Concat):
        for part in e.parts:
            yield from nets(part)


class Bits:
    """Bit-parallel logic on packed words, folding the shared constant arrays."""

    def __init__(self, words: int) -> None:
        self.zero = np.zeros(words, dtype=np.uint64)
        self.one = np.full(words, np.iinfo(np.uint64).max, dtype=np.uint64)

    def inv(self, x: np.ndarray) -> np.ndarray:
        """NOT."""
        return self.one if x is self.zero else self.zero if x is self.one else ~x

    def and_(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """AND."""
        if x is self.zero or y is self.zero:
            return self.zero
        return y if x is self.one else x if y is self.one else x & y

    def or_(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """OR."""
        if x is self.one or y is self.one:
            return self.one
        return y if x is self.zero else x if y is self.zero else x | y

    def xor(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """XOR."""
        if x is self.zero:
            return y
        if y is self.zero:
            return x
        if x is self.one:
            return self.inv(y)
        return self.inv(x) if y is self.one else x ^ y

    def add(self, a: Sequence[np.ndarray], b: Sequence[np.ndarray], carry: np.ndarray) -> list:
        """Ripple-carry sum of equal-width vectors, truncated to their width."""
        out = []
        for x, y in zip(a, b, strict=True):
            t = self.xor(x, y)
            out.append(self.xor(t, carry))
            carry = self.or_(self.and_(x, y), self.and_(carry, t))
        return out

    def mul(self, a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list:
        """Shift-and-add product of equal-width vectors, truncated to their width."""
        n = len(a)
        acc = [self.zero] * n
        for i, bit in enumerate(b):
            if bit is self.zero:
                continue
            partial = [self.and_(bit, x) for x in a[: n - i]]
            acc[i:] = self.add(acc[i:], partial, self.zero)
        return acc

    def any(self, bits: Sequence[np.ndarray]) -> np.ndarray:
        """OR over ``bits``."""
        out = self.zero
        for bit in bits:
            out = self.or_(out, bit)
        return out

    def parity(self, bits: Sequence[np.ndarray]) -> np.ndarray:
        """XOR over ``bits``."""
        out = self.zero
        for bit in bits:
            out = self.xor(out, bit)
        return out


def _resize(bits: list[np.ndarray], w: int, sign: bool, ops: Bits) -> list[np.ndarray]:
    if len(bits) >= w:
        return bits[:w]
    fill = bits[-1] if sign and bits else ops.zero
    return bits + [fill] * (w - len(bits))


def _reduce(op: str, bits: list[np.ndarray], ops: Bits) -> np.ndarray:
    if op in ("&", "~&"):
        out = ops.inv(ops.any([ops.inv(b) for b in bits]))
    elif op in ("|", "~|", "!"):
        out = ops.any(bits)
    else:
        out = ops.parity(bits)
    return ops.inv(out) if op in ("~&", "~|", "~^", "!") else out


def evaluate(
    e: Expr, w: int, sign: bool, values: dict[str, np.ndarray], ops: Bits
) -> list[np.ndarray]:
    """The low ``w`` bits of ``e`` in a context of width ``w`` and signedness ``sign``."""
    if isinstance(e, Nets):
        return _resize([values[n] for n in e.bits], w, sign, ops)
    if isinstance(e, Const):
        bits = [ops.one if (e.value >> k) & 1 else ops.zero for k in range(min(w, e.width))]
        return _resize(bits, w, sign, ops)
    if isinstance(e, Unary):
        if e.op in CONTEXT_UNARY:
            x = evaluate(e.operand, w, sign, values, ops)
            if e.op == "~":
                return [ops.inv(b) for b in x]
            return x if e.op == "+" else ops.add([ops.zero] * w, [ops.inv(b) for b in x], ops.one)
        inner = evaluate(e.operand, width(e.operand), signed(e.operand), values, ops)
        if e.op in CASTS:
            return _resize(inner, w, sign, ops)
        return _resize([_reduce(e.op, inner, ops)], w, False, ops)
    if isinstance(e, Binary):
        if e.op in LOGICAL_BINARY:
            left, right = (
                ops.any(evaluate(x, width(x), signed(x), values, ops)) for x in (e.left, e.right)
            )
            bit = ops.and_(left, right) if e.op == "&&" else ops.or_(left, right)
            return _resize([bit], w, False, ops)
        x = evaluate(e.left, w, sign, values, ops)
        y = evaluate(e.right, w, sign, values, ops)
        if e.op == "+":
            return ops.add(x, y, ops.zero)
        if e.op == "-":
            return ops.add(x, [ops.inv(b) for b in y], ops.one)
        if e.op == "*":
            return ops.mul(x, y)
        pair = {"&": ops.and_, "|": ops.or_, "^": ops.xor}.get(e.op)
        if pair is not None:
            return [pair(p, q) for p, q in zip(x, y, strict=True)]
        return [ops.inv(ops.xor(p, q)) for p, q in zip(x, y, strict=True)]  # ~^
    if isinstance(e, Cond):
        c = ops.any(evaluate(e.cond, width(e.cond), signed(e.cond), values, ops))
        yes = evaluate(e.yes, w, sign, values, ops)
        no = evaluate(e.no, w, sign, values, ops)
        nc = ops.inv(c)
        return [ops.or_(ops.and_(c, p), ops.and_(nc, q)) for p, q in zip(yes, no, strict=True)]
    bits: list[np.ndarray] = []
    for part in reversed(e.parts):
        bits += evaluate(part, width(part), signed(part), values, ops)
    return _resize(bits * e.count, w, False, ops)


@dataclass
class Assign:
    """``assign targets = expr``: drives ``targets`` (net bits, LSB first)."""

    targets: list[str]
    expr: Expr
    line: int

    def __post_init__(self) -> None:
        self.inputs = list(dict.fromkeys(nets(self.expr)))

    @property
    def outputs(self) -> list[str]:
        """The net bits this assignment drives."""
        return self.targets

    def evaluate(self, values: dict[str, np.ndarray], ops: Bits) -> list[np.ndarray]:
        """The target bits' values (the right-hand side at the target's width)."""
        return evaluate(self.expr, len(self.targets), signed(self.expr), values, ops)
