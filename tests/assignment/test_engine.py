"""The table-swap engine and the reported accuracies against a fresh ``convert``."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Subset

import appmult_fx as amx
from appmult_fx.assignment.engine import Engine

from .conftest import SEARCH_KW


def _split(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """The documented split: a permutation seeded with ``seed``; the first
    ``round(val_fraction * n)`` indices are the validation split, calibration takes
    ``calib_batches`` batches of the rest in order."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = round(SEARCH_KW["val_fraction"] * n)
    return order[n_val:], sorted(order[:n_val])


def _fresh(model, spec, calib):
    """Convert ``spec`` from scratch and give it the exact-quantized model's observers."""
    ref = amx.convert(model, amx.Spec().set_global("mul8u_exact"), example_inputs=calib[0][:1])
    amx.calibrate(ref, calib, progress=False)
    gm = amx.convert(model, spec, gradient="ste", example_inputs=calib[0][:1])
    for src, dst in zip(amx.quantizers(ref), amx.quantizers(gm), strict=True):
        dst.load_state_dict(src.state_dict())
    return gm.eval()


def test_reported_accuracy_equals_fresh_convert(result, lenet, digits):
    train, test = digits
    rest, val = _split(len(train))
    bs, nb = SEARCH_KW["batch_size"], SEARCH_KW["calib_batches"]
    calib = [torch.stack([train[i][0] for i in rest[k * bs : (k + 1) * bs]]) for k in range(nb)]
    front = result.pareto
    mixed = [p for p in front if len(set(p.assignment.values())) > 1]
    for p in [front[0], front[-1]] + mixed[:1]:
        gm = _fresh(lenet, result.spec(p), calib)
        assert amx.evaluate(gm, Subset(train, val))["acc"] == p.accuracy
        assert amx.evaluate(gm, test)["acc"] == p.test_accuracy


def test_run_from_cache_equals_full_run(lenet, digits):
    x = torch.stack([digits[0][i][0] for i in range(96)])
    engine = Engine(lenet, (8, 8, False), [x[:64]], x[:1])
    assert torch.equal(engine.run(x, {}), engine.gm(x))
    cached = engine.trace_values(x)
    table = amx.multiplier("mul8u_drum3").table
    changed = 0
    for layer in engine.layer_names:
        full = engine.run(x, {layer: table})
        assert torch.equal(engine.run_from(cached, layer, table, engine.downstream(layer)), full)
        changed += not torch.equal(full, engine.gm(x))
    assert changed > 0  # the swap does reach the computation


def test_sensitivity_table_and_kl(result, lenet, candidates, digits):
    sens = result.sensitivity
    assert sens.layers == result.layers and sens.candidates == [m.name for m in candidates]
    assert all(sens.loss(layer, "mul8u_exact") == 0.0 for layer in sens.layers)
    assert sens.markdown().count("\n") == 2 + len(sens.layers)
    kl = amx.search(lenet, candidates, digits[0], trials=1, metric="kl", **SEARCH_KW).sensitivity
    assert all(
        v == pytest.approx(0.0, abs=1e-12) for v in (kl.loss(n, "mul8u_exact") for n in kl.layers)
    )
    assert max(kl.loss(n, "mul8u_drum3") for n in kl.layers) > 0.0
