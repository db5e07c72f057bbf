"""The Optuna study: one categorical parameter per layer, objectives (energy, accuracy).

Storage is any Optuna storage URL (an SQLite file by default, so a search resumes after
Ctrl-C and several processes share it; PostgreSQL/MySQL URLs let machines join). Each trial's
sampler is re-created with a seed derived from ``(seed, worker, completed trials)``, so a
search that is interrupted and resumed samples exactly the trials an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState
from torch import Tensor, nn

from ..allocator import freed_memory_kept, keep_freed_memory
from .energy import EnergyModel
from .engine import Batches, Engine, accuracy

SAMPLERS = ("nsga2", "tpe")
DIRECTIONS = ("minimize", "maximize")  # energy, validation accuracy


def _derived_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


class ReseededSampler(BaseSampler):
    """Delegates to a fresh NSGA-II or TPE sampler per trial, seeded from the study's state."""

    def __init__(self, kind: str, seed: int, worker: int = 0, population_size: int = 50) -> None:
        if kind not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {kind!r}")
        self.kind, self.seed, self.worker, self.population_size = (
            kind,
            seed,
            worker,
            population_size,
        )
        self._inner = self._make(seed)

    def _make(self, seed: int) -> BaseSampler:
        if self.kind == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True)
        return optuna.samplers.NSGAIISampler(population_size=self.population_size, seed=seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Re-create the inner sampler for this trial, then let it prepare."""
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        self._inner = self._make(_derived_seed(self.seed, self.worker, done))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        """Delegated."""
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, space: dict) -> dict:
        """Delegated."""
        return self._inner.sample_relative(study, trial, space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, name: str, distribution: Any
    ) -> Any:
        """Delegated."""
        return self._inner.sample_independent(study, trial, name, distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Delegated."""
        self._inner.after_trial(study, trial, state, values)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage for ``url`` with heartbeats: trials of a killed worker are failed after
    a grace period and retried with the same parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=30,
            grace_period=120,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=2
            ),
        )


@dataclass
class Problem:
    """Everything a worker process needs to evaluate assignments (picklable)."""

    model: nn.Module
    candidates: dict[str, Any]  # name -> Multiplier
    layers: list[str]
    width: tuple[int, int, bool]
    calibration: list[Tensor]
    validation: list[tuple[Tensor, Tensor]]
    example: Tensor
    energy: EnergyModel

    def engine(self) -> Engine:
        """The calibrated evaluation engine (deterministic: equal in every worker)."""
        return Engine(
            self.model, self.width, self.calibration, self.example, layer_names=self.layers
        )


def tables_of(problem: Problem, assignment: Mapping[str, str]) -> dict[str, Tensor]:
    """Layer -> product table of an assignment."""
    return {layer: problem.candidates[name].table for layer, name in assignment.items()}


def evaluate_assignment(
    problem: Problem, engine: Engine, assignment: Mapping[str, str], batches: Batches
) -> tuple[float, float]:
    """``(relative energy, accuracy)`` of one assignment on labelled ``batches``."""
    return problem.energy.energy(assignment), accuracy(
        engine, tables_of(problem, assignment), batches
    )


def make_objective(problem: Problem, engine: Engine, worker: int) -> Callable:
    """The trial function: suggest a candidate per layer, reuse a finished twin's values."""
    names = list(problem.candidates)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        assignment = {layer: trial.suggest_categorical(layer, names) for layer in problem.layers}
        trial.set_user_attr("worker", worker)
        for done in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if done.params == assignment:
                trial.set_user_attr("duplicate_of", done.number)
                return tuple(done.values)  # type: ignore[return-value]
        return evaluate_assignment(problem, engine, assignment, problem.validation)

    return objective


def requeue_interrupted(study: optuna.Study) -> int:
    """Enqueue again the fixed parameters of seeded trials that failed (Ctrl-C mid-trial)."""
    trials = study.get_trials(deepcopy=False)
    live = [
        t.system_attrs.get("fixed_params", t.params)
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
    ]
    count = 0
    for t in trials:
        fixed = t.system_attrs.get("fixed_params")
        if t.state == TrialState.FAIL and fixed is not None and fixed not in live:
            study.enqueue_trial(fixed, user_attrs=dict(t.user_attrs), skip_if_exists=False)
            live.append(fixed)
            count += 1
    return count


@dataclass(frozen=True)
class StudyConfig:
    """Where the study lives and how it samples."""

    storage: str | None  # None: in memory (one process)
    name: str
    trials: int
    sampler: str = "nsga2"
    seed: int = 0
    population_size: int = 50


def load_study(cfg: StudyConfig, worker: int = 0, backend: Any = None) -> optuna.Study:
    """Create or load the study named ``cfg.name`` (objectives: energy, accuracy) in
    ``backend`` (an open storage) or else in ``cfg.storage``."""
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna.create_study(
        storage=backend if backend is not None else open_storage(cfg.storage),
        study_name=cfg.name,
        directions=list(DIRECTIONS),
        sampler=ReseededSampler(cfg.sampler, cfg.seed, worker, cfg.population_size),
        load_if_exists=True,
    )


def run_worker(
    problem: Problem,
    cfg: StudyConfig,
    worker: int,
    threads: int | None = None,
    barrier: Any = None,
    backend: Any = None,
    limit: int | None = None,
    keep_memory: bool = False,
) -> int:
    """Run trials of the study until it holds ``cfg.trials`` complete ones; returns how many
    trials this worker ran (at most ``limit``). ``barrier`` (spawned workers) makes every
    worker start together; ``keep_memory`` (spawned workers of a process that kept freed
    memory) sets :func:`~appmult_fx.allocator.keep_freed_memory` here too."""
    if keep_memory:
        keep_freed_memory()
    if threads is not None:
        torch.set_num_threads(threads)
    engine = problem.engine()
    study = load_study(cfg, worker, backend)
    if barrier is not None:
        barrier.wait()
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if done >= cfg.trials:
        return 0
    before = len(study.get_trials(deepcopy=False))
    study.optimize(
        make_objective(problem, engine, worker),
        n_trials=cfg.trials - done if limit is None else min(limit, cfg.trials - done),
        callbacks=[optuna.study.MaxTrialsCallback(cfg.trials, states=(TrialState.COMPLETE,))],
    )
    return len(study.get_trials(deepcopy=False)) - before


def run_workers(problem: Problem, cfg: StudyConfig, workers: int, backend: Any = None) -> None:
    """Run the study here (one worker) or in ``workers`` spawned processes that share it."""
    if workers <= 1:
        run_worker(problem, cfg, 0, backend=backend)
        return
    if cfg.storage is None:
        raise ValueError("several workers need a shared storage URL (e.g. sqlite:///study.db)")
    # Enqueued (seed) trials first, here: Optuna's queue of waiting trials is not safe to pop
    # from several processes at once (two workers may run the same trial).
    waiting = load_study(cfg).get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if waiting:
        run_worker(problem, cfg, 0, limit=len(waiting))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    threads = max(1, torch.get_num_threads() // workers)
    procs = [
        ctx.Process(
            target=run_worker,
            args=(problem, cfg, w, threads, barrier),
            kwargs={"keep_memory": freed_memory_kept()},
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"search worker(s) exited with codes {bad}; see their error output")
