"""``amx.search``: which multiplier for which layer, trading energy against accuracy."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import optuna
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..passes.spec import resolve_multiplier
from .energy import EnergyModel, candidate_costs, reference_cost
from .engine import Batches, Engine, common_width
from .result import SearchPoint, SearchResult
from .seeds import greedy_assignments, uniform_assignments
from .sensitivity import METRICS, measure
from .study import (
    SAMPLERS,
    Problem,
    StudyConfig,
    budget,
    check_identity,
    evaluate_assignment,
    load_study,
    requeue_interrupted,
    run_workers,
    study_identity,
)


def resolve_candidates(candidates: Sequence[Any]) -> dict[str, Any]:
    """Name -> Multiplier for objects, built-in names or LUT paths (names must be unique)."""
    out: dict[str, Any] = {}
    for ref in candidates:
        m = resolve_multiplier(ref)
        if m is None:
            raise ValueError("a candidate cannot be None (float); give multipliers")
        if m.name in out and out[m.name].sha256 != m.sha256:
            raise ValueError(
                f"two different candidates are named {m.name!r}; rename one (mult.renamed(...))"
            )
        out[m.name] = m
    if not out:
        raise ValueError("no candidate multipliers given")
    return out


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(search-train, validation)`` indices: a seeded permutation, validation held back."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be > 0 and < 1, got {val_fraction!r}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(val_fraction * n))
    if n_val >= n:
        raise ValueError(
            f"val_fraction {val_fraction!r} holds back {n_val} of the {n} training examples, "
            "leaving none to calibrate on; give a smaller val_fraction (--val-fraction)"
        )
    return order[n_val:], sorted(order[:n_val])


def labelled_batches(data: Dataset, indices: Sequence[int], batch_size: int) -> Batches:
    """``(x, y)`` tensors of ``data[indices]`` in batches of ``batch_size``."""
    out = []
    for start in range(0, len(indices), batch_size):
        items = [data[i] for i in indices[start : start + batch_size]]
        out.append((torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])))
    return out


def _open_study(cfg: StudyConfig, identity: dict, backend: Any) -> None:
    """Create the study, or check that an existing one was made from the same inputs."""
    study = load_study(cfg, backend=backend)
    where = f"study {cfg.name!r}" + (f" in {cfg.storage}" if cfg.storage else "")
    check_identity(study, identity, where)
    requeue_interrupted(study)


def _enqueue_seeds(cfg: StudyConfig, seeds: list, backend: Any) -> None:
    study = load_study(cfg, backend=backend)
    for label, assignment in seeds:
        study.enqueue_trial(assignment, user_attrs={"seed": label}, skip_if_exists=True)


def _points(cfg: StudyConfig, backend: Any, energy: EnergyModel) -> list[SearchPoint]:
    """Every complete trial; energies are computed from the current costs (never the stored
    objective values)."""
    study = load_study(cfg, backend=backend)
    return [
        SearchPoint(
            dict(t.params),
            energy.energy(t.params),
            t.values[1],
            t.number,
            t.user_attrs.get("seed", ""),
        )
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ]


def _check_int(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def search(
    model: nn.Module,
    candidates: Sequence[Any],
    data: Dataset,
    *,
    test: Dataset | None = None,
    trials: int = 100,
    workers: int = 1,
    sampler: str = "nsga2",
    population_size: int | None = None,
    seed: int = 0,
    storage: str | None = None,
    study_name: str = "appmult-search",
    metric: str = "accuracy",
    cost: str = "power_mw",
    costs: Mapping[str, float] | None = None,
    reference_cost_value: float | None = None,
    val_fraction: float = 0.2,
    calib_batches: int = 8,
    batch_size: int = 64,
    layers: Sequence[str] | None = None,
    leaf_modules: Sequence[str | type] = (),
    concrete_args: dict[str, Any] | None = None,
    progress: bool = True,
) -> SearchResult:
    """Search per-layer multiplier assignments of ``model`` for (low energy, high accuracy).

    ``data`` is a (non-augmented) training set: ``val_fraction`` of it is held back as the
    validation split every assignment is scored on; calibration uses ``calib_batches`` batches
    of the rest. ``test`` (optional) is evaluated only for the Pareto points and baselines,
    never used to choose. Energy: ``SUM MACs x cost`` relative to the exact multiplier (see
    :mod:`.energy`). ``storage`` is an Optuna URL (``sqlite:///study.db``, PostgreSQL, MySQL):
    the search resumes from it and ``workers`` processes share it; ``None`` keeps the study in
    memory (one worker). ``metric`` (``accuracy`` or ``kl``) drives the sensitivity table and
    the greedy seeds; trials are always scored by validation accuracy. ``leaf_modules`` and
    ``concrete_args`` are passed to :func:`~appmult_fx.convert` (modules the tracer must not
    enter, e.g. ones with data-dependent control flow).

    Resuming a stored study checks that it was made from the same inputs (layers, candidates,
    costs, model weights and graph, calibration and validation data and the settings that
    drew them) and refuses otherwise, naming what differs.
    """
    _check_int("trials", trials, 1)
    _check_int("workers", workers, 1)
    _check_int("calib_batches", calib_batches, 1)
    _check_int("batch_size", batch_size, 1)
    if population_size is not None:
        _check_int("population_size", population_size, 2)
    if not isinstance(val_fraction, (int, float)) or not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be > 0 and < 1, got {val_fraction!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if layers is not None and not list(layers):
        raise ValueError("layers is empty: name at least one layer to search (or None: all)")
    cands = resolve_candidates(candidates)
    width = common_width(list(cands.values()))
    cost_of = candidate_costs(list(cands.values()), cost, costs)
    ref = reference_cost(list(cands.values()), cost_of, reference_cost_value)
    if storage is None and workers > 1:
        raise ValueError("several workers need a shared storage URL (e.g. sqlite:///study.db)")
    train_idx, val_idx = split_indices(len(data), val_fraction, seed)
    calib = [
        x for x, _ in labelled_batches(data, train_idx[: calib_batches * batch_size], batch_size)
    ]
    validation = labelled_batches(data, val_idx, 256)
    leaf_modules = tuple(leaf_modules)
    engine = Engine(
        model,
        width,
        calib,
        calib[0][:1],
        layer_names=layers,
        leaf_modules=leaf_modules,
        concrete_args=concrete_args,
    )
    energy = EnergyModel(engine.macs(), cost_of, ref)
    problem = Problem(
        model,
        cands,
        engine.layer_names,
        width,
        calib,
        validation,
        calib[0][:1],
        energy,
        leaf_modules,
        concrete_args,
    )
    cfg = StudyConfig(
        storage,
        study_name,
        trials,
        sampler,
        seed,
        population_size or max(4, min(50, trials // 5)),
    )
    backend = optuna.storages.InMemoryStorage() if storage is None else None
    settings = {
        "seed": seed,
        "val_fraction": float(val_fraction),
        "calib_batches": calib_batches,
        "batch_size": batch_size,
    }
    _open_study(cfg, study_identity(problem, engine.gm.code, settings), backend)
    tables = {n: m.table for n, m in cands.items()}
    sens = measure(
        engine, tables, validation, metric=metric, layers=problem.layers, progress=progress
    )
    uniform = uniform_assignments(problem.layers, list(cands))
    greedy = greedy_assignments(sens, cost_of, problem.energy.macs)
    seeds = [(f"uniform:{n}", a) for n, a in zip(cands, uniform)]
    seeds += [(f"greedy:{i}", a) for i, a in enumerate(greedy) if a not in uniform]
    _enqueue_seeds(cfg, seeds, backend)
    run_workers(problem, cfg, workers, backend)
    points = _points(cfg, backend, problem.energy)
    distinct = len({tuple(sorted(p.assignment.items())) for p in points})
    target, _ = budget(problem, cfg)
    if distinct < target:
        warnings.warn(
            f"the search stopped after {len(points)} trials with {distinct} distinct assignments "
            f"of the {target} asked: the sampler kept repeating evaluated ones",
            stacklevel=2,
        )
    baselines = [
        SearchPoint(a, *evaluate_assignment(problem, engine, a, validation), label=f"uniform:{n}")
        for n, a in zip(cands, uniform)
    ]
    result = SearchResult(
        points,
        baselines,
        problem.layers,
        cands,
        problem.energy.macs,
        cost_of,
        ref,
        sens,
        exact=engine.exact,
    )
    if test is not None:
        _score_test(
            result, problem, engine, labelled_batches(test, range(len(test)), 256), progress
        )
    result.info.update(
        study_name=study_name,
        storage=storage,
        sampler=sampler,
        seed=seed,
        metric=metric,
        trials=len(points),
        distinct_assignments=distinct,
        validation_examples=len(val_idx),
        calibration_batches=len(calib),
        width=list(width),
    )
    return result


def _score_test(
    result: SearchResult, problem: Problem, engine: Any, batches: Batches, progress: bool
) -> None:
    """Fill ``test_accuracy`` of the Pareto points and the baselines (points re-made)."""
    front = result.pareto
    scored: dict[tuple, float] = {}
    every = front + result.baselines
    for p in tqdm(every, desc="test", disable=not progress, leave=False):
        key = tuple(sorted(p.assignment.items()))
        if key not in scored:
            scored[key] = evaluate_assignment(problem, engine, p.assignment, batches)[1]
    result.points = [
        replace(p, test_accuracy=scored.get(tuple(sorted(p.assignment.items()))))
        for p in result.points
    ]
    result.baselines = [
        replace(p, test_accuracy=scored[tuple(sorted(p.assignment.items()))])
        for p in result.baselines
    ]
