"""The energy model: hand computation from layer shapes and powers; refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import appmult_fx as amx

from .conftest import POWERS, SEARCH_KW


def _hand_macs(model: nn.Module) -> dict[str, int]:
    """Multiplies per sample of every conv/linear, from forward-hook shapes (independent of
    the library's records)."""
    macs: dict[str, int] = {}

    def hook(name):
        def fn(mod, inp, out):
            if isinstance(mod, nn.Conv2d):
                per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
                macs[name] = out[0].numel() * per_out
            else:
                macs[name] = mod.in_features * mod.out_features

        return fn

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    model(torch.zeros(1, 1, 8, 8))
    for h in handles:
        h.remove()
    return macs


def test_energy_equals_hand_computation(result, lenet):
    macs = _hand_macs(lenet)
    assert set(macs) == set(result.layers)
    exact = POWERS["mul8u_exact"] * sum(macs.values())
    checked = 0
    for p in result.points + result.baselines:
        hand = sum(macs[layer] * POWERS[name] for layer, name in p.assignment.items()) / exact
        assert p.energy == pytest.approx(hand, rel=1e-12)
        checked += 1
    assert checked >= 12
    uniform = {p.label: p.energy for p in result.baselines}
    assert uniform["uniform:mul8u_exact"] == pytest.approx(1.0)
    assert uniform["uniform:mul8u_drum3"] == pytest.approx(0.12 / 0.40)


def test_missing_power_is_refused(lenet, candidates, digits):
    bare = candidates + [amx.multiplier("mul8u_bam2_8")]
    with pytest.raises(ValueError, match="no 'power_mw' figure.*mul8u_bam2_8"):
        amx.search(lenet, bare, digits[0], trials=1, **SEARCH_KW)


def test_costs_for_names_that_are_not_candidates_are_refused(lenet, candidates, digits):
    """A typo in ``costs`` would leave the candidate's own power figure in use."""
    with pytest.raises(ValueError, match=r"costs given for \['mul8u_trnc4'\], which are not"):
        amx.search(lenet, candidates, digits[0], trials=1, costs={"mul8u_trnc4": 0.1}, **SEARCH_KW)


def test_missing_exact_reference_is_refused(lenet, candidates, digits):
    approx = [m for m in candidates if m.name != "mul8u_exact"]
    with pytest.raises(ValueError, match="no cost is known for an exact 8x8 unsigned"):
        amx.search(lenet, approx, digits[0], trials=1, **SEARCH_KW)


def test_proxy_costs_and_given_reference(lenet, digits):
    names = ["mul8u_trunc6", "mul8u_drum3"]
    res = amx.search(
        lenet,
        names,
        digits[0],
        trials=2,
        costs={"mul8u_trunc6": 3.0, "mul8u_drum3": 1.0},
        reference_cost_value=4.0,
        **SEARCH_KW,
    )
    assert {p.label: p.energy for p in res.baselines} == pytest.approx(
        {"uniform:mul8u_trunc6": 0.75, "uniform:mul8u_drum3": 0.25}
    )


def test_mixed_widths_are_refused(lenet, digits):
    mixed = [amx.multiplier(n).with_hardware(power_mw=1.0) for n in ("mul8u_exact", "mul7u_exact")]
    with pytest.raises(ValueError, match="mix widths"):
        amx.search(lenet, mixed, digits[0], trials=1, **SEARCH_KW)


def test_layers_outside_the_search_stay_exact(lenet, candidates, digits):
    searched = ["features.3", "classifier.0"]
    res = amx.search(lenet, candidates, digits[0], trials=3, layers=searched, **SEARCH_KW)
    macs = _hand_macs(lenet)
    total = sum(macs.values())
    for p in res.points:
        assert set(p.assignment) == set(searched)
        hand = sum(macs[n] * POWERS[p.assignment.get(n, "mul8u_exact")] for n in macs)
        assert p.energy == pytest.approx(hand / (POWERS["mul8u_exact"] * total), rel=1e-12)
    gm = amx.convert(lenet, res.spec(res.pareto[0]), gradient="ste")
    used = {r.name: r.multiplier_name for r in amx.layers(gm)}
    assert {n: used[n] for n in searched} == res.pareto[0].assignment
    assert all(used[n] == "mul8u_exact" for n in used if n not in searched)
