"""What the search refuses, and what a stored study must match to be resumed."""

from __future__ import annotations

import copy

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import appmult_fx as amx
from appmult_fx.assignment import SearchPoint, SearchResult
from appmult_fx.assignment.energy import EnergyModel, candidate_costs, reference_cost

from .conftest import POWERS, SEARCH_KW

# --- resuming a stored study ----------------------------------------------------------------


@pytest.fixture(scope="module")
def stored(tmp_path_factory, lenet, candidates, digits) -> str:
    """A 2-trial SQLite study made with SEARCH_KW and the fixture's costs."""
    url = f"sqlite:///{tmp_path_factory.mktemp('stored') / 'study.db'}"
    amx.search(lenet, candidates, digits[0], trials=2, storage=url, **SEARCH_KW)
    return url


def _perturbed(model: nn.Module) -> nn.Module:
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 0.5
    return other


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"costs": {"mul8u_drum3": 0.05}}, r"costs .*: mul8u_drum3 0\.12 -> 0\.05"),
        ({"cost": "area_um2", "costs": POWERS | {"mul8u_exact": 0.8}}, r"mul8u_exact 0\.4 -> 0\.8"),
        ({"calib_batches": 1}, r"calibration batches \(--calib-batches\): 2 -> 1"),
        ({"batch_size": 32}, r"batch size \(batch_size=\): 64 -> 32"),
        ({"val_fraction": 0.2}, r"validation fraction \(--val-fraction\): 0\.1 -> 0\.2"),
        ({"seed": 1}, r"the seed \(--seed\).*: 0 -> 1"),
        ({"model": "perturbed"}, r"the model's weights \(state_dict\)"),
        ({"layers": ["features.0"]}, r"the searched layers"),
    ],
)
def test_resuming_from_other_inputs_is_refused(
    stored, lenet, candidates, digits, change, message
) -> None:
    """A stored trial's numbers depend on the model, the costs, the calibration and the
    validation split: a study made from other ones is refused, naming what differs."""
    kw = dict(SEARCH_KW, trials=3, storage=stored) | change
    model = _perturbed(lenet) if kw.pop("model", None) else lenet
    with pytest.raises(ValueError, match="holds trials made from other inputs") as info:
        amx.search(model, candidates, digits[0], **kw)
    assert info.match(message)


def test_resuming_with_the_same_inputs_continues(stored, lenet, candidates, digits) -> None:
    res = amx.search(lenet, candidates, digits[0], trials=3, storage=stored, **SEARCH_KW)
    assert len({tuple(sorted(p.assignment.items())) for p in res.points}) == 3


def test_shown_energies_come_from_the_current_costs() -> None:
    """Energies are computed from the assignment and the current costs, never read back from
    the stored objective values."""
    from appmult_fx.assignment.api import _points
    from appmult_fx.assignment.study import StudyConfig, load_study

    backend = optuna.storages.InMemoryStorage()
    cfg = StudyConfig(None, "s", 1)
    study = load_study(cfg, backend=backend)
    dist = optuna.distributions.CategoricalDistribution(["a", "b"])
    study.add_trial(
        optuna.trial.create_trial(params={"l": "b"}, distributions={"l": dist}, values=[9.0, 0.5])
    )
    energy = EnergyModel({"l": 10}, {"a": 1.0, "b": 0.25}, 1.0)
    (point,) = _points(cfg, backend, energy)
    assert point.energy == 0.25 and point.accuracy == 0.5


# --- the Pareto front covers the uniform baselines; trials >= 1 -----------------------------


def test_front_and_thresholds_include_the_baselines() -> None:
    """A uniform assignment that dominates every trial is the front (and the threshold's
    answer), as when --trials is below the number of candidates."""
    trial = SearchPoint({"l": "exact"}, 1.0, 0.90, trial=0, label="uniform:exact")
    cheap = SearchPoint({"l": "cheap"}, 0.3, 0.95, label="uniform:cheap")
    exact_baseline = SearchPoint({"l": "exact"}, 1.0, 0.90, label="uniform:exact")
    res = SearchResult([trial], [exact_baseline, cheap], ["l"], {}, {"l": 1}, {}, 1.0)
    assert res.pareto == [cheap]
    assert res.cheapest_within(0.005) == cheap


def test_fewer_trials_than_candidates_keeps_the_baselines(lenet, candidates, digits) -> None:
    res = amx.search(lenet, candidates, digits[0], trials=1, **SEARCH_KW)
    assert len(res.points) == 1
    front = res.pareto
    for b in res.baselines:
        dominated = any(q.dominates(b) for q in res.points + res.baselines)
        on_front = any((p.energy, p.accuracy) == (b.energy, b.accuracy) for p in front)
        assert dominated or on_front, b
    assert front[0].energy == min(b.energy for b in res.baselines)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"trials": 0}, r"trials must be an integer >= 1, got 0"),
        ({"trials": -5}, r"trials must be an integer >= 1, got -5"),
        ({"workers": 0}, r"workers must be an integer >= 1"),
        ({"calib_batches": 0}, r"calib_batches must be an integer >= 1"),
        ({"population_size": 1}, r"population_size must be an integer >= 2"),
        ({"val_fraction": 0.0}, r"val_fraction must be > 0 and < 1"),
        ({"val_fraction": 1.5}, r"val_fraction must be > 0 and < 1"),
        ({"val_fraction": 0.9999}, r"leaving none to calibrate on"),
        ({"layers": []}, r"layers is empty"),
        ({"sampler": "cmaes"}, r"sampler must be one of"),
    ],
)
def test_bad_arguments_are_refused(lenet, candidates, digits, kw, message) -> None:
    with pytest.raises(ValueError, match=message):
        amx.search(lenet, candidates, digits[0], **(SEARCH_KW | {"trials": 2} | kw))


# --- exact multipliers with conflicting costs ------------------------------------------------


def test_conflicting_exact_costs_are_refused() -> None:
    """Two exact candidates (or reference_cost_value) with different figures: the reference
    would depend on the candidates' order."""
    a = amx.multiplier("mul8u_exact").with_hardware(power_mw=0.5)
    b = amx.multiplier("mul8u_exact").renamed("my_exact").with_hardware(power_mw=0.4)
    drum = amx.multiplier("mul8u_drum3").with_hardware(power_mw=0.1)
    for order in ([a, b, drum], [drum, b, a]):
        with pytest.raises(ValueError, match=r"conflicting costs for the exact multiplier"):
            reference_cost(order, candidate_costs(order))
    with pytest.raises(ValueError, match=r"--reference-power\): 0\.3, mul8u_exact: 0\.5"):
        reference_cost([a, drum], candidate_costs([a, drum]), 0.3)
    same = [a, b.with_hardware(power_mw=0.5), drum]
    assert reference_cost(same, candidate_costs(same)) == 0.5
    assert reference_cost([a, drum], candidate_costs([a, drum]), 0.5) == 0.5


# --- duplicates do not use the budget --------------------------------------------------------


def test_repeated_assignments_do_not_count_toward_the_budget(lenet, digits) -> None:
    """Two layers x three candidates (9 assignments): trials=9 evaluates all nine, however
    often the sampler repeats one; a budget above the space stops at the space."""
    cands = [amx.multiplier(n).with_hardware(power_mw=POWERS[n]) for n in list(POWERS)[:3]]
    kw = SEARCH_KW | {"layers": ["features.0", "classifier.4"], "population_size": 4}
    res = amx.search(lenet, cands, digits[0], trials=9, **kw)
    assert len({tuple(sorted(p.assignment.items())) for p in res.points}) == 9
    assert res.info["distinct_assignments"] == 9
    res = amx.search(lenet, cands, digits[0], trials=50, **kw)
    assert res.info["distinct_assignments"] == 9


# --- models the search cannot or can only with help trace -----------------------------------


class _Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) if x.sum() > 0 else -self.lin(x)  # data-dependent: untraceable


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.g, self.fc = nn.Linear(16, 16), _Gate(), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.g(F.relu(self.a(x))))


def _data(features: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(200, features, generator=g), torch.randint(0, 4, (200,)))


def test_leaf_modules_reach_convert(candidates) -> None:
    torch.manual_seed(0)
    kw = SEARCH_KW | {"batch_size": 32, "trials": 2}
    res = amx.search(_Gated().eval(), candidates, _data(16), leaf_modules=["g"], **kw)
    assert res.layers == ["a", "fc"]
    assert set(res.macs) >= {"a", "fc"}


class _OnlyBilinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Bilinear(8, 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(x, x)


class _NoMultiply(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :4] * 2


@pytest.mark.filterwarnings("ignore:appmult-fx cannot convert")
@pytest.mark.parametrize("model", [_OnlyBilinear(), _NoMultiply()], ids=["float-only", "none"])
def test_a_model_without_convertible_layers_is_refused(candidates, model) -> None:
    with pytest.raises(ValueError, match="no layer convert\\(\\) can give an approximate"):
        amx.search(model.eval(), candidates, _data(8), **(SEARCH_KW | {"batch_size": 32}))
