"""Gradient LUTs: the seed's files exactly (edge="row"), the column rule, STE, regression."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from appmult_fx.luts.gradients import default_window, gradient_tables, with_gradients
from appmult_fx.luts.multiplier import Multiplier
from appmult_fx.luts.registry import multiplier


def test_row_edge_reproduces_every_seed_gradient_file(seed_luts: dict[Path, Multiplier]) -> None:
    files = [p for p in seed_luts if "+bp_avg_" in p.name]
    assert len(files) == 10
    for path in files:
        seed = seed_luts[path]
        window = int(path.stem.rsplit("_", 1)[1])  # <w> from the file name
        ours = with_gradients(seed, window, edge="row", step=1 / 16)
        assert torch.equal(ours.grad_a, seed.grad_a), path
        assert torch.equal(ours.grad_b, seed.grad_b), path
        assert ours.provenance["window"] == window and ours.provenance["edge"] == "row"


def test_column_edge_differs_from_row_only_for_asymmetric_tables(
    seed_luts: dict[Path, Multiplier],
) -> None:
    seed = next(m for p, m in seed_luts.items() if p.name == "mul7u_06Q_lutfp.txt")
    row, column = gradient_tables(seed, 4, "row"), gradient_tables(seed, 4, "column")
    assert torch.equal(row[1], column[1])  # grad_b has one edge rule
    assert not torch.equal(row[0], column[0])
    t = seed.table
    n = 128
    # column rule at an edge row a = 0: (max over a of L[a, b] - min) / N, for every b
    spread = (t.max(dim=0).values - t.min(dim=0).values).float() / n
    assert torch.allclose(column[0][0], spread)
    symmetric = multiplier("mul6u_trunc4")
    assert torch.equal(
        gradient_tables(symmetric, 2, "row")[0], gradient_tables(symmetric, 2, "column")[0]
    )


def test_difference_on_exact_multiplier_is_exact_inside() -> None:
    """Away from the edges the smoothed difference of a*b is the exact slope (no wrap-around)."""
    for name in ("mul6u_exact", "mul6s_exact"):
        exact = multiplier(name)
        ga, gb = gradient_tables(exact, 3, "column")
        by_value = torch.argsort(exact.exact_table()[1])  # index order -> value order
        inside = slice(3 + 1, 64 - 1 - 3)

        ga, gb, ea, eb = (t[by_value][:, by_value] for t in (ga, gb, exact.grad_a, exact.grad_b))
        assert torch.equal(ga[inside], ea[inside]), name
        assert torch.equal(gb[:, inside], eb[:, inside]), name


def test_ste_and_regression() -> None:
    exact = multiplier("mul5s_exact")
    ga, gb = gradient_tables(exact, method="ste")
    assert torch.equal(ga, exact.grad_a) and torch.equal(gb, exact.grad_b)
    ra, rb = gradient_tables(exact, method="regression")  # exact is linear in each operand
    assert torch.allclose(ra, exact.grad_a, atol=1e-4) and torch.allclose(
        rb, exact.grad_b, atol=1e-4
    )
    trunc = multiplier("mul6u_trunc4")
    ra, rb = gradient_tables(trunc, method="regression")
    assert torch.equal(ra, ra[0].expand(64, 64)) and torch.equal(rb, rb[:, :1].expand(64, 64))


def test_with_gradients_records_provenance_and_checks_arguments() -> None:
    mult = Multiplier("m", 4, False, multiplier("mul4u_trunc2").table)
    g = with_gradients(mult)
    assert g.provenance["window"] == default_window(4) == 1
    assert g.provenance["edge"] == "column" and g.provenance["gradient_method"] == "difference"
    assert with_gradients(mult, method="ste").provenance == {"gradient_method": "ste"}
    for kwargs, message in (
        ({"window": -1}, "window"),
        ({"edge": "diagonal"}, "edge"),
        ({"method": "magic"}, "method"),
        ({"step": 0}, "step"),
    ):
        with pytest.raises(ValueError, match=message):
            with_gradients(mult, **kwargs)


def test_every_approximate_builtin_has_column_gradients() -> None:
    m = multiplier("mul8u_drum4")
    assert m.has_gradients and m.provenance["window"] == 16 and m.provenance["edge"] == "column"
    ga, gb = gradient_tables(m, 16, "column")
    assert torch.equal(m.grad_a, ga) and torch.equal(m.grad_b, gb)
