"""Property: random Verilog expressions evaluated by the reader equal an independent evaluator.

The oracle below follows IEEE 1364-2005 5.4/5.5 literally on Python integers: it sizes the
whole right-hand side to ``max(lhs width, rhs self-determined width)``, extends every
context-determined operand to that size (sign-extending only when the expression is signed),
evaluates, and truncates to the target, as the standard describes. The reader (bit-sliced,
evaluating at the target width directly) must agree on every operand pair.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from appmult_fx.luts.netlist_import import parse_netlist
from appmult_fx.luts.netlist_sim import simulate_multiplier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

Node = tuple[Any, ...]
CONTEXT_UNARY = ["~", "-", "+"]
SELF_UNARY = ["!", "&", "|", "^", "~&", "~|", "~^"]
CONTEXT_BINARY = ["+", "-", "*", "&", "|", "^", "~^", "^~"]
LOGICAL = ["&&", "||"]


def ext(v: int, w: int, signed: bool, to: int) -> int:
    """``v`` (``w`` bits) extended or truncated to ``to`` bits."""
    v &= (1 << w) - 1
    if signed and w and (v >> (w - 1)) & 1:
        v -= 1 << w
    return v & ((1 << to) - 1)


def typ(n: Node, env: dict[str, tuple[int, bool]]) -> tuple[int, bool]:
    """(self-determined width, signedness) by the standard's tables 5-22 and 5.5.1."""
    kind = n[0]
    if kind == "var":
        return env[n[1]]
    if kind == "sel":
        return n[2] - n[3] + 1, False
    if kind == "lit":
        return n[2], n[3]
    if kind == "un":
        w, s = typ(n[2], env)
        return (w, s) if n[1] in CONTEXT_UNARY else (1, False)
    if kind == "cast":
        return typ(n[2], env)[0], n[1] == "$signed"
    if kind == "bin":
        (wl, sl), (wr, sr) = typ(n[2], env), typ(n[3], env)
        return (1, False) if n[1] in LOGICAL else (max(wl, wr), sl and sr)
    if kind == "cond":
        (wl, sl), (wr, sr) = typ(n[2], env), typ(n[3], env)
        return max(wl, wr), sl and sr
    return n[1] * sum(typ(p, env)[0] for p in n[2]), False  # concat / replication


def ev(n: Node, env: dict[str, tuple[int, bool]], vals: dict[str, int], w: int, s: bool) -> int:
    """Value of ``n`` as a ``w``-bit pattern in a context of width ``w``, signedness ``s``."""
    kind = n[0]
    mask = (1 << w) - 1
    own_w, own_s = typ(n, env)
    if kind == "var":
        return ext(vals[n[1]], own_w, s, w)
    if kind == "sel":
        return ext(vals[n[1]] >> n[3], own_w, False, w)
    if kind == "lit":
        return ext(n[1], own_w, s, w)
    if kind == "un" and n[1] in CONTEXT_UNARY:
        x = ev(n[2], env, vals, w, s)
        return {"~": ~x, "-": -x, "+": x}[n[1]] & mask
    if kind in ("un", "cast"):
        iw, isg = typ(n[2], env)
        x = ev(n[2], env, vals, iw, isg)
        if kind == "cast":
            return ext(x, iw, s, w)
        ones = x == (1 << iw) - 1
        parity = bin(x).count("1") & 1
        r = {"!": x == 0, "&": ones, "|": x != 0, "^": parity}.get(n[1])
        if r is None:
            r = {"~&": not ones, "~|": x == 0, "~^": 1 - parity}[n[1]]
        return int(r)
    if kind == "bin" and n[1] in LOGICAL:
        lv, rv = (ev(x, env, vals, *typ(x, env)) != 0 for x in (n[2], n[3]))
        return int(lv and rv) if n[1] == "&&" else int(lv or rv)
    if kind == "bin":
        x, y = ev(n[2], env, vals, w, s), ev(n[3], env, vals, w, s)
        ops = {"+": x + y, "-": x - y, "*": x * y, "&": x & y, "|": x | y, "^": x ^ y}
        return ops.get(n[1], ~(x ^ y)) & mask
    if kind == "cond":
        c = ev(n[1], env, vals, *typ(n[1], env))
        return ev(n[2] if c else n[3], env, vals, w, s)
    value, total = 0, 0
    for part in reversed(n[2]):
        pw, ps = typ(part, env)
        value |= ev(part, env, vals, pw, ps) << total
        total += pw
    rep = 0
    for _ in range(n[1]):
        rep = (rep << total) | value
    return ext(rep, own_w, False, w)


def render(n: Node) -> str:
    """Verilog text of ``n``."""
    kind = n[0]
    if kind == "var":
        return n[1]
    if kind == "sel":
        name, hi, lo, style = n[1], n[2], n[3], n[4]
        if hi == lo and style == 0:
            return f"{name}[{hi}]"
        return [
            f"{name}[{hi}:{lo}]",
            f"{name}[{lo} +: {hi - lo + 1}]",
            f"{name}[{hi} -: {hi - lo + 1}]",
        ][style % 3]
    if kind == "lit":
        return n[5]
    if kind in ("un", "cast"):
        return f"{n[1]}({render(n[2])})"
    if kind == "bin":
        return f"({render(n[2])} {n[1]} {render(n[3])})"
    if kind == "cond":
        return f"({render(n[1])} ? {render(n[2])} : {render(n[3])})"
    inner = ", ".join(render(p) for p in n[2])
    return f"{{{n[1]}{{{inner}}}}}" if n[1] > 1 else f"{{{inner}}}"


@st.composite
def literal(draw: st.DrawFn, sized: bool | None = None) -> Node:
    if sized is None:
        sized = draw(st.booleans())
    if not sized:
        v = draw(st.integers(0, 300))
        form = draw(st.sampled_from(["plain", "d", "h"]))
        text = {"plain": str(v), "d": f"'d{v}", "h": f"'h{v:x}"}[form]
        return ("lit", text, v, 32, form == "plain")
    w = draw(st.integers(1, 9))
    v = draw(st.integers(0, (1 << w) - 1))
    sign = draw(st.booleans())
    base = draw(st.sampled_from(["b", "o", "d", "h"]))
    digits = {"b": f"{v:b}", "o": f"{v:o}", "d": str(v), "h": f"{v:X}"}[base]
    text = f"{w}'{'s' if sign else ''}{base}{digits}"
    return ("lit", text, v, w, sign)


def _lit(node: Node) -> Node:
    """Literal node layout: ("lit", value, width, signed, unsized, text) for the evaluator."""
    _, text, v, w, sign = node
    return ("lit", v, w, sign, "'" not in text or text.startswith("'"), text)


@st.composite
def leaf(draw: st.DrawFn, env: dict[str, tuple[int, bool]], in_concat: bool = False) -> Node:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return ("var", draw(st.sampled_from(sorted(env))))
    if choice == 3:  # signed operands are what the sign rules are about
        return ("cast", "$signed", ("var", draw(st.sampled_from(sorted(env)))))
    if choice == 1:
        name = draw(st.sampled_from(sorted(env)))
        w = env[name][0]
        lo = draw(st.integers(0, w - 1))
        hi = draw(st.integers(lo, w - 1))
        return ("sel", name, hi, lo, draw(st.integers(0, 2)))
    return _lit(draw(literal(sized=True if in_concat else None)))


def expr(env: dict[str, tuple[int, bool]], depth: int) -> st.SearchStrategy[Node]:
    if depth == 0:
        return leaf(env)
    sub = expr(env, depth - 1)
    nested = st.tuples(
        st.just("cat"), st.just(1), st.lists(leaf(env, True), min_size=1, max_size=2)
    )
    part = st.one_of(leaf(env, in_concat=True), nested, sub.filter(lambda n: n[0] != "lit"))
    return st.one_of(
        leaf(env),
        st.tuples(st.just("un"), st.sampled_from(CONTEXT_UNARY + SELF_UNARY), sub),
        st.tuples(st.just("cast"), st.sampled_from(["$signed", "$unsigned"]), sub),
        st.tuples(st.just("bin"), st.sampled_from(CONTEXT_BINARY + LOGICAL), sub, sub),
        st.tuples(st.just("cond"), sub, sub, sub),
        st.tuples(st.just("cat"), st.integers(1, 3), st.lists(part, min_size=1, max_size=3)),
    )


def module_text(spec: dict[str, Any]) -> str:
    """The Verilog module of a case: inputs A, B, a vector wire W, output O (maybe split)."""
    wa, wb, wo, split = spec["wa"], spec["wb"], spec["wo"], spec["split"]
    ww, ws = spec["env"]["W"]
    lhs = "O" if split == 0 else f"{{O[{wo - 1}:{split}], O[{split - 1}:0]}}"
    return (
        f"module m(A, B, O);\n  input [{wa - 1}:0] A;\n  input [{wb - 1}:0] B;\n"
        f"  output [{wo - 1}:0] O;\n  wire {'signed ' if ws else ''}[{ww - 1}:0] W;\n"
        f"  assign W = {render(spec['w'])};\n  assign {lhs} = {render(spec['o'])};\nendmodule\n"
    )


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    wa, wb = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    env = {"A": (wa, False), "B": (wb, False)}
    w_expr = draw(expr(env, 2))
    env["W"] = (draw(st.integers(1, 8)), draw(st.booleans()))
    binary_root = st.tuples(
        st.just("bin"), st.sampled_from(CONTEXT_BINARY), expr(env, 2), expr(env, 2)
    )
    o_expr = draw(st.one_of(expr(env, 3), binary_root))
    wo = draw(st.integers(1, 12))
    split = draw(st.integers(0, wo - 1))
    return {"env": env, "w": w_expr, "o": o_expr, "wo": wo, "wa": wa, "wb": wb, "split": split}


def assign(node: Node, env: dict[str, tuple[int, bool]], vals: dict[str, int], to: int) -> int:
    """``assign target = node``: evaluate at max(target, self width), truncate."""
    w, s = typ(node, env)
    size = max(w, to)
    return ev(node, env, vals, size, s) & ((1 << to) - 1)


def check(spec: dict[str, Any]) -> None:
    """The reader's table of the case's module equals the oracle on every (A, B)."""
    text, env = module_text(spec), spec["env"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.v"
        path.write_text(text)
        sim = simulate_multiplier(parse_netlist(path))
    expected = np.zeros((1 << spec["wa"], 1 << spec["wb"]), dtype=np.int64)
    for a in range(1 << spec["wa"]):
        for b in range(1 << spec["wb"]):
            vals = {"A": a, "B": b}
            vals["W"] = assign(spec["w"], env, vals, env["W"][0])
            expected[a, b] = assign(spec["o"], env, vals, spec["wo"])
    assert np.array_equal(sim.codes, expected), text


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_random_expressions_match_the_standard(spec: dict[str, Any]) -> None:
    check(spec)


SA, SB = ("cast", "$signed", ("var", "A")), ("cast", "$signed", ("var", "B"))
FIVE = ("lit", 5, 32, True, True, "5")
HAND_WRITTEN = [  # (W's expression, W signed, O's expression, O width)
    (SA, True, ("bin", "+", SA, ("var", "B")), 8),  # mixed signedness: unsigned, zero-extend
    (SA, True, ("bin", "+", SA, SB), 8),  # both signed: sign-extend
    (SA, True, ("bin", "+", ("var", "W"), SB), 8),  # signed wire
    (SA, False, ("cond", ("var", "B"), SA, SB), 8),  # ?: signed only if both branches are
    (SA, False, ("bin", "-", ("lit", 3, 32, True, True, "3"), FIVE), 40),  # 32-bit signed -2
    (SA, False, ("un", "~", ("var", "A")), 8),  # ~ after zero extension: high bits set
    (SA, False, ("bin", "*", ("var", "A"), ("lit", 3, 32, False, True, "'d3")), 8),
    (SA, False, ("un", "!", ("bin", "*", ("var", "A"), ("var", "B"))), 4),  # ! self-determined
    (SA, False, ("cat", 2, (("var", "B"), ("sel", "A", 2, 1, 0))), 12),
]


@pytest.mark.parametrize(("w", "w_signed", "o", "wo"), HAND_WRITTEN)
def test_hand_written_width_and_sign_cases(w: Node, w_signed: bool, o: Node, wo: int) -> None:
    env = {"A": (3, False), "B": (3, False), "W": (6, w_signed)}
    check({"env": env, "w": w, "o": o, "wo": wo, "wa": 3, "wb": 3, "split": wo // 2})
