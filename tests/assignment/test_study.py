"""The Optuna study: Pareto front, resuming, several workers."""

from __future__ import annotations

import optuna
import pytest
from hypothesis import given
from hypothesis import strategies as st

import appmult_fx as amx
from appmult_fx.assignment import SearchPoint, pareto_front

from .conftest import SEARCH_KW


def _dominates(a: SearchPoint, b: SearchPoint) -> bool:
    return (a.energy <= b.energy and a.accuracy >= b.accuracy) and (
        a.energy < b.energy or a.accuracy > b.accuracy
    )


def test_front_has_no_dominated_point(result):
    front = result.pareto
    assert front and [p.energy for p in front] == sorted(p.energy for p in front)
    for p in front:
        assert not any(_dominates(q, p) for q in result.points)
    for q in result.points:  # and every trial is on or behind the front
        assert any(
            p == q or _dominates(p, q) or (p.energy, p.accuracy) == (q.energy, q.accuracy)
            for p in front
        )
    labels = {p.label for p in result.points}
    assert {f"uniform:{n}" for n in result.candidates} <= labels
    assert any(label.startswith("greedy:") for label in labels)


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=25))
def test_pareto_front_brute_force(pairs):
    points = [SearchPoint({}, float(e), a / 6) for e, a in pairs]
    front = pareto_front(points)
    expected = {(p.energy, p.accuracy) for p in points if not any(_dominates(q, p) for q in points)}
    assert {(p.energy, p.accuracy) for p in front} == expected
    assert len(front) == len(expected)


def _trials(url: str) -> list[tuple]:
    study = optuna.load_study(study_name="appmult-search", storage=url)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    return [(t.number, t.params, t.values) for t in done]


RESUME_KW = dict(SEARCH_KW, population_size=4)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, lenet, candidates, digits) -> str:
    """An uninterrupted 13-trial study."""
    url = f"sqlite:///{tmp_path_factory.mktemp('whole') / 'whole.db'}"
    amx.search(lenet, candidates, digits[0], trials=13, storage=url, **RESUME_KW)
    return url


def test_interrupted_and_resumed_search_gives_the_same_study(
    tmp_path, whole, lenet, candidates, digits
):
    parts = f"sqlite:///{tmp_path / 'parts.db'}"
    amx.search(lenet, candidates, digits[0], trials=9, storage=parts, **RESUME_KW)
    assert len(_trials(parts)) == 9
    resumed = amx.search(lenet, candidates, digits[0], trials=13, storage=parts, **RESUME_KW)
    assert _trials(parts) == _trials(whole)
    assert len({tuple(sorted(p.assignment.items())) for p in resumed.points}) == 13
    # the NSGA-II generations after the 9 seeds are sampled, not enqueued
    assert any(not p.label for p in resumed.points)


def test_two_workers_share_one_sqlite_study(tmp_path, lenet, candidates, digits):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    res = amx.search(lenet, candidates, digits[0], trials=24, workers=2, storage=url, **SEARCH_KW)
    study = optuna.load_study(study_name="appmult-search", storage=url)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    workers = {t.user_attrs["worker"] for t in done}
    assert workers == {0, 1}
    distinct = {tuple(sorted(t.params.items())) for t in done}
    # both stop at the shared budget of distinct assignments (one may overshoot by one);
    # trials that repeat an evaluated assignment do not count
    assert 24 <= len(distinct) <= 25
    assert len(res.points) == len(done)


def test_ctrl_c_mid_trial_then_resume_gives_the_same_trials(
    tmp_path, monkeypatch, whole, lenet, candidates, digits
):
    import appmult_fx.assignment.study as study_mod

    kw = RESUME_KW
    real, calls = study_mod.evaluate_assignment, []

    def interrupting(*args):
        calls.append(1)
        if len(calls) == 11:  # a sampled trial (the 9 seeds come first)
            raise KeyboardInterrupt
        return real(*args)

    url = f"sqlite:///{tmp_path / 'cut.db'}"
    monkeypatch.setattr(study_mod, "evaluate_assignment", interrupting)
    with pytest.raises(KeyboardInterrupt):
        amx.search(lenet, candidates, digits[0], trials=13, storage=url, **kw)
    monkeypatch.setattr(study_mod, "evaluate_assignment", real)
    amx.search(lenet, candidates, digits[0], trials=13, storage=url, **kw)
    failed = optuna.load_study(study_name="appmult-search", storage=url).get_trials(
        states=(optuna.trial.TrialState.FAIL,)
    )
    assert len(failed) == 1
    assert [t[1:] for t in _trials(url)] == [t[1:] for t in _trials(whole)]


def test_search_over_rectangular_candidates(lenet, digits) -> None:
    """8x4 candidates: energies relative to the exact 8x4 multiplier, specs that convert."""
    powers = {"mul8x4u_exact": 0.20, "mul8x4u_trunc4": 0.12, "mul8x4u_trunc6": 0.08}
    cands = [amx.multiplier(n).with_hardware(power_mw=p) for n, p in powers.items()]
    res = amx.search(lenet, cands, digits[0], trials=6, **SEARCH_KW)
    uniform = {set(b.assignment.values()).pop(): b for b in res.baselines}
    assert uniform["mul8x4u_exact"].energy == pytest.approx(1.0)
    assert uniform["mul8x4u_trunc6"].energy == pytest.approx(0.08 / 0.20)
    gm = amx.convert(lenet, res.spec(res.pareto[0]))
    assert {(r.bits_a, r.bits_b) for r in amx.layers(gm) if r.approximate} == {(8, 4)}
