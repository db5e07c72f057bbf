"""Rectangular built-ins (``mul<a>x<b><u|s>_<family>``) against ground truths written here:
per-bit / per-value loops for the tables, a per-value loop of the difference method (per-axis
windows) for the gradient LUTs; listing, naming and parameter-range rules."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from appmult_fx.luts.formats import load_multiplier, save_multiplier
from appmult_fx.luts.gradients import default_window, with_gradients
from appmult_fx.luts.registry import RECTANGULAR_WIDTHS, builtin_names, multiplier
from hypothesis import given, settings
from hypothesis import strategies as st

from .test_generators import direct, drum, keep_columns, kept_partial_products, mitchell

WIDTHS = [(8, 4), (8, 2), (4, 8), (3, 7), (6, 5)]
_NAME = re.compile(r"mul(\d)x(\d)([us])_(exact|trunc|bam|optrunc|mitchell|drum)[\d_]*")


def _expected_tables(a: int, b: int, signed: bool) -> dict[str, torch.Tensor]:
    """Name suffix -> table, each from the textbook definition (loops over bits / values)."""
    narrow, wide = min(a, b), max(a, b)
    cases: dict[str, torch.Tensor] = {"exact": direct((a, b), signed, lambda x, y: x * y)}
    for k in sorted({1, (a + b) // 2, a + b - 1}):
        keep = keep_columns(0, k)
        cases[f"trunc{k}"] = direct((a, b), signed, kept_partial_products((a, b), signed, keep))
    for h, v in ((1, (a + b) // 2), (b - 1, 0)):
        keep = keep_columns(h, v)
        cases[f"bam{h}_{v}"] = direct((a, b), signed, kept_partial_products((a, b), signed, keep))
    for t in sorted({1, narrow - 1}):  # x >> t << t: Python ints floor, as two's complement
        cases[f"optrunc{t}"] = direct(
            (a, b), signed, lambda x, y, t=t: (x >> t << t) * (y >> t << t)
        )
    cases["mitchell"] = direct((a, b), signed, mitchell)
    for k in sorted({3, wide - 1}):
        cases[f"drum{k}"] = direct((a, b), signed, drum(k))
    return cases


@pytest.mark.parametrize("signed", [False, True], ids=["u", "s"])
@pytest.mark.parametrize("widths", WIDTHS, ids=[f"{a}x{b}" for a, b in WIDTHS])
def test_every_family_equals_its_definition(widths: tuple[int, int], signed: bool) -> None:
    a, b = widths
    prefix = f"mul{a}x{b}{'s' if signed else 'u'}_"
    for suffix, expected in _expected_tables(a, b, signed).items():
        m = multiplier(prefix + suffix)
        assert m.name == prefix + suffix and m.bits == (a, b) and m.signed == signed
        assert tuple(m.table.shape) == (1 << a, 1 << b)
        assert torch.equal(m.table.long(), expected), m.name
        assert m.has_gradients and m.grad_a.shape == m.grad_b.shape == m.table.shape


# family -> (valid range of its parameter(s) for widths a x b and sign, the definition)
_RANGES = {
    "trunc": lambda a, b, s: [(1, a + b - 1)],
    "bam": lambda a, b, s: [(0, b - 1), (0, a + b - 1)],
    "optrunc": lambda a, b, s: [(1, min(a, b) - 1)],
    "drum": lambda a, b, s: [(3 if s else 2, max(a, b) - 1)],
}


def _definition(family: str, a: int, b: int, signed: bool, params: list[int]):
    if family == "trunc":
        return kept_partial_products((a, b), signed, keep_columns(0, params[0]))
    if family == "bam":
        return kept_partial_products((a, b), signed, keep_columns(*params))
    if family == "optrunc":
        t = params[0]
        return lambda x, y: (x >> t << t) * (y >> t << t)
    return drum(params[0])


@settings(max_examples=60, deadline=None)
@given(
    widths=st.tuples(st.integers(2, 8), st.integers(2, 8)).filter(
        lambda w: w[0] != w[1] and w[0] + w[1] <= 11
    ),
    signed=st.booleans(),
    family=st.sampled_from(sorted(_RANGES)),
    data=st.data(),
)
def test_any_parameter_in_range_builds_its_definition_and_outside_is_refused(
    widths: tuple[int, int], signed: bool, family: str, data: st.DataObject
) -> None:
    """Random widths and parameters, a little beyond each end of the documented range too."""
    a, b = widths
    ranges = _RANGES[family](a, b, signed)
    params = [data.draw(st.integers(max(0, lo - 2), hi + 2)) for lo, hi in ranges]
    name = f"mul{a}x{b}{'s' if signed else 'u'}_{family}" + "_".join(map(str, params))
    if all(lo <= p <= hi for p, (lo, hi) in zip(params, ranges, strict=True)):
        expected = direct((a, b), signed, _definition(family, a, b, signed, params))
        assert torch.equal(multiplier.__wrapped__(name).table.long(), expected), name
    else:
        with pytest.raises(ValueError, match=r"must be in \["):
            multiplier.__wrapped__(name)


def _values(bits: int, signed: bool) -> list[int]:
    """Operand value of each table index (two's complement), written out here."""
    return [i - (1 << bits) if signed and i >= 1 << (bits - 1) else i for i in range(1 << bits)]


def _axis_gradient(lines: list[list[float]], w: int, signed: bool) -> list[list[float]]:
    """Difference-method slope along each line (values in increasing operand order): a window
    mean of half width ``w``, central difference inside, ``(max - min) / N`` near the edges
    (``/ (N - 1)`` on lines of at most 16 values; signed tables: ``last - first``, not
    ``max - min``)."""
    out = []
    for line in lines:
        n = len(line)

        def mean(p: int, line: list[float] = line, n: int = n) -> float:
            lo, hi = max(0, p - w), min(n - 1, p + w)
            return sum(line[lo : hi + 1]) / (hi - lo + 1)

        rise = line[-1] - line[0] if signed else max(line) - min(line)
        edge = rise / (n - 1 if n <= 16 else n)  # mean slope on short axes
        out.append(
            [(mean(p + 1) - mean(p - 1)) / 2 if w + 1 <= p <= n - 2 - w else edge for p in range(n)]
        )
    return out


def reference_gradients(
    table: torch.Tensor, bits_a: int, bits_b: int, signed: bool, w_a: int, w_b: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(grad_a, grad_b)`` in index order: grad_a along each column (edge: that column's
    spread), grad_b along each row (edge: that row's spread), operands ordered by value."""
    va, vb = _values(bits_a, signed), _values(bits_b, signed)
    rows = sorted(range(len(va)), key=va.__getitem__)  # index -> value order
    cols = sorted(range(len(vb)), key=vb.__getitem__)
    t = table.tolist()
    columns = [[t[i][j] for i in rows] for j in cols]
    by_column = _axis_gradient(columns, w_a, signed)
    by_row = _axis_gradient([[t[i][j] for j in cols] for i in rows], w_b, signed)
    grad_a, grad_b = np.zeros((len(va), len(vb))), np.zeros((len(va), len(vb)))
    for p, i in enumerate(rows):
        for q, j in enumerate(cols):
            grad_a[i, j], grad_b[i, j] = by_column[q][p], by_row[p][q]
    return grad_a, grad_b


@pytest.mark.parametrize(
    "name",
    ["mul8x4u_trunc3", "mul3x7s_drum3", "mul8x2s_mitchell", "mul4x8u_optrunc1", "mul6x5s_bam1_2"],
)
def test_gradients_use_each_axis_own_window(name: str) -> None:
    """grad_a smooths along A with A's default window, grad_b along B with B's."""
    m = multiplier(name)
    w_a, w_b = default_window(m.bits_a), default_window(m.bits_b)
    ga, gb = reference_gradients(m.table, m.bits_a, m.bits_b, m.signed, w_a, w_b)
    assert np.allclose(m.grad_a.numpy(), ga, rtol=1e-6, atol=1e-3), name
    assert np.allclose(m.grad_b.numpy(), gb, rtol=1e-6, atol=1e-3), name
    p = m.provenance
    assert (p["gradient_method"], p["edge"], p["window"]) == ("difference", "column", w_a)
    assert p.get("window_b", w_a) == w_b


@pytest.mark.parametrize("name", ["mul6s_drum3", "mul5u_optrunc2", "mul4s_trunc4"])
def test_square_gradients_keep_one_window_for_both_axes(name: str) -> None:
    m = multiplier(name)
    w = default_window(m.bits)
    ga, gb = reference_gradients(m.table, m.bits, m.bits, m.signed, w, w)
    assert np.allclose(m.grad_a.numpy(), ga, rtol=1e-6, atol=1e-4)
    assert np.allclose(m.grad_b.numpy(), gb, rtol=1e-6, atol=1e-4)
    assert m.provenance["window"] == w and "window_b" not in m.provenance


def test_explicit_windows_int_or_pair() -> None:
    m = multiplier("mul8x4u_trunc3")
    for window, (w_a, w_b) in ((2, (2, 2)), ((4, 0), (4, 0))):
        g = with_gradients(m, window=window)
        ga, gb = reference_gradients(m.table, 8, 4, False, w_a, w_b)
        assert np.allclose(g.grad_a.numpy(), ga, atol=1e-3)
        assert np.allclose(g.grad_b.numpy(), gb, atol=1e-3)
        assert g.provenance["window"] == w_a and g.provenance.get("window_b", w_a) == w_b
    for bad in (-1, (1, -2), (1, 2, 3), (1.5, 2), True):
        with pytest.raises(ValueError, match=r"window must be a non-negative integer or a pair"):
            with_gradients(m, window=bad)  # type: ignore[arg-type]


def test_listing_has_every_pair_family_and_sign() -> None:
    everything = builtin_names()
    square = builtin_names(rectangular=False)
    assert everything[: len(square)] == square and len(set(everything)) == len(everything)
    assert all("x" not in n.split("_")[0] for n in square)
    rectangular = everything[len(square) :]
    assert rectangular == [n for pair in RECTANGULAR_WIDTHS for n in builtin_names(pair)]
    assert len(RECTANGULAR_WIDTHS) == 42 and (8, 4) in RECTANGULAR_WIDTHS
    for a, b in RECTANGULAR_WIDTHS:
        names = builtin_names((a, b))
        for s in "us":
            families = {
                _NAME.fullmatch(n).group(4) for n in names if n.startswith(f"mul{a}x{b}{s}_")
            }
            wanted = {"exact", "trunc", "bam", "optrunc", "mitchell"} | (
                {"drum"} if max(a, b) >= 4 else set()
            )
            assert families == wanted, (a, b, s)
    assert (
        builtin_names(8) == builtin_names((8, 8)) == [n for n in square if n[3:5] in ("8u", "8s")]
    )


def test_every_listed_rectangular_name_resolves() -> None:
    """All ~800 names: widths from the name, shape, signedness, gradients, output range."""
    rectangular = builtin_names()[len(builtin_names(rectangular=False)) :]
    for name in rectangular:
        m = multiplier.__wrapped__(name)  # not memoised: keep the registry's cache for others
        a, b, sign, _ = _NAME.fullmatch(name).groups()
        a, b, signed = int(a), int(b), sign == "s"
        assert m.name == name and m.bits == (a, b) and m.signed == signed and m.widths == f"{a}x{b}"
        assert m.table.shape == m.grad_a.shape == m.grad_b.shape == (1 << a, 1 << b)
        assert torch.isfinite(m.grad_a).all() and torch.isfinite(m.grad_b).all()
        lo, hi = (-(1 << (a + b - 1)), (1 << (a + b - 1)) - 1) if signed else (0, (1 << a + b) - 1)
        assert lo <= int(m.table.min()) and int(m.table.max()) <= hi, name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("mul8x4u_trunc12", r"k must be in \[1, 11\] for 8x4-bit operands, got 12"),
        ("mul8x4u_bam4_0", r"h must be in \[0, 3\] for 8x4-bit operands"),
        ("mul4x8u_bam1_12", r"v must be in \[0, 11\]"),
        ("mul8x4u_optrunc4", r"t must be in \[1, 3\] for 8x4-bit operands"),
        ("mul3x8s_optrunc0", r"t must be in \[1, 2\]"),
        ("mul8x4u_drum8", r"k must be in \[2, 7\] for 8x4-bit operands"),
        ("mul8x4s_drum2", r"k must be in \[3, 7\]"),
        ("mul3x2s_drum3", r"k must be in \[3, 2\] for 3x2-bit operands \(none"),
        ("mul8x8u_trunc2", r"square multiplier has one width.*use 'mul8u_trunc2'"),
        ("mul4x4s_exact", r"use 'mul4s_exact'"),
        ("mul5x5u_mitchell", r"use 'mul5u_mitchell'"),
    ],
)
def test_bad_names_and_parameters_are_refused(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        multiplier(name)


def test_unknown_widths_are_unknown_names() -> None:
    for name in ("mul9x4u_exact", "mul8x1u_trunc2", "mul8x4_trunc2"):
        with pytest.raises(KeyError, match="unknown built-in multiplier"):
            multiplier(name)


def test_per_axis_window_survives_both_file_formats(tmp_path: Path) -> None:
    m = multiplier("mul8x4s_optrunc2")
    back = load_multiplier(save_multiplier(m, tmp_path / "m.lut"))
    assert back.sha256 == m.sha256 and back.provenance["window_b"] == 1
    text = save_multiplier(with_gradients(m, step=1 / 16), tmp_path / "m_lutfp.txt")
    assert "half_ws_a=16, half_ws_b=1" in text.read_text()
    seed = load_multiplier(text)
    assert (seed.provenance["window"], seed.provenance["window_b"]) == (16, 1)
    assert seed.provenance["edge"] == "column"  # the row rule exists for square tables only


@pytest.fixture
def evo_8x4(shared: Path) -> Path:
    return shared / "evoapprox" / "8x4_unsigned"


def test_evoapprox_8x4_c_and_verilog_give_usable_gradient_luts(
    evo_8x4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mul8x4u_2AN from its C model and its Verilog: one 256 x 16 table; with_gradients gives
    the per-axis difference gradients (checked by the loop above) that gradient="lut" uses."""
    from appmult_fx.luts.user_defined import from_c_source, from_netlist

    monkeypatch.setenv("APPMULT_FX_CACHE_DIR", str(tmp_path / "cache"))
    c_model = from_c_source(evo_8x4 / "mul8x4u_2AN.c", (8, 4))
    verilog = from_netlist(evo_8x4 / "mul8x4u_2AN.v")
    assert c_model.bits == verilog.bits == (8, 4) and c_model.table.shape == (256, 16)
    assert torch.equal(c_model.table, verilog.table)
    for m in (c_model, verilog):
        g = with_gradients(m)
        assert g.has_gradients and g.grad_a.shape == g.grad_b.shape == (256, 16)
        ga, gb = reference_gradients(g.table, 8, 4, False, 16, 1)
        assert np.allclose(g.grad_a.numpy(), ga, atol=1e-3)
        assert np.allclose(g.grad_b.numpy(), gb, atol=1e-3)
        assert (g.provenance["window"], g.provenance["window_b"]) == (16, 1)
        assert g.hardware == m.hardware
    # near-exact (WCE 1): the LUT gradients stay close to the exact ones in the interior
    inner = slice(17, 256 - 17)
    exact_grad_a = torch.arange(16, dtype=torch.float32).expand(256, 16)
    assert (g.grad_a[inner] - exact_grad_a[inner]).abs().max() < 0.1


@pytest.mark.parametrize(
    "name", ["mul8x2u_trunc1", "mul8x3s_trunc1", "mul8x2s_trunc1", "mul8s_trunc2", "mul3s_trunc1"]
)
def test_narrow_axis_gradient_is_the_slope_not_three_quarters_of_it(name: str) -> None:
    """A near-exact multiplier's gradient along the B axis is about the A operand, sign
    included, at the edges too (the paper's ``(max - min) / N`` edge rule gives 3/4 of it on a
    2-bit axis, and ``|a|`` instead of ``a`` for negative ``a``)."""
    m = multiplier(name)
    va = torch.tensor(_values(m.bits_a, m.signed), dtype=torch.float32)
    big = va.abs() >= min(8, 2 ** (m.bits_a - 1))  # a small relative error of the truncation
    ratio = m.grad_b[big] / va[big, None]
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.15), name
