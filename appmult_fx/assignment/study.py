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
    leaf_modules: tuple = ()
    concrete_args: dict[str, Any] | None = None

    def engine(self) -> Engine:
        """The calibrated evaluation engine (deterministic: equal in every worker)."""
        return Engine(
            self.model,
            self.width,
            self.calibration,
            self.example,
            layer_names=self.layers,
            leaf_modules=self.leaf_modules,
            concrete_args=self.concrete_args,
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


IDENTITY_VERSION = 2

# What each entry of a study's identity covers (named in the refusal when one differs).
IDENTITY_LABELS = {
    "version": "the appmult-fx study format",
    "layers": "the searched layers (layers=)",
    "candidates": "the candidate multipliers (names or tables)",
    "width": "the candidates' widths",
    "costs": "the candidates' costs (--power / --cost; costs= / cost=)",
    "reference_cost": "the exact multiplier's cost (--reference-power; reference_cost_value=)",
    "model": "the model's weights (state_dict)",
    "graph": "the model's traced graph (architecture / forward)",
    "seed": "the seed (--seed), which draws the validation split",
    "val_fraction": "the validation fraction (--val-fraction)",
    "calib_batches": "the calibration batches (--calib-batches)",
    "batch_size": "the calibration batch size (batch_size=)",
    "calibration": "the calibration data (training set)",
    "validation": "the validation data (training set)",
}


def _digest_tensor(h: Any, t: Any) -> None:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    else:  # extra state and friends
        h.update(repr(t).encode())


def data_digest(items: Any) -> str:
    """sha256 of (nested sequences of) tensors and other values, in order."""
    h = hashlib.sha256()

    def visit(x: Any) -> None:
        if isinstance(x, (list, tuple)):
            h.update(f"[{len(x)}".encode())
            for y in x:
                visit(y)
        else:
            _digest_tensor(h, x)

    visit(items)
    return h.hexdigest()


def study_identity(
    problem: Problem, graph_code: str, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Everything a stored trial's energy and accuracy depend on: layers, candidates (sha256),
    costs, the model (weights and traced graph), the calibration and validation data and the
    settings that drew them (``settings``: seed, val_fraction, calib_batches, batch_size)."""
    return {
        "version": IDENTITY_VERSION,
        "layers": list(problem.layers),
        "candidates": {n: m.sha256 for n, m in problem.candidates.items()},
        "width": list(problem.width),
        "costs": dict(problem.energy.costs),
        "reference_cost": problem.energy.reference,
        "model": data_digest(list(problem.model.state_dict().items())),
        "graph": hashlib.sha256(graph_code.encode()).hexdigest(),
        **dict(settings),
        "calibration": data_digest(problem.calibration),
        "validation": data_digest(problem.validation),
    }


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def identity_differences(known: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable list of what differs between a stored and the current identity."""
    out = []
    for key in current:
        label = IDENTITY_LABELS.get(key, key)
        if key not in known:
            out.append(f"{label}: not recorded (a study made by an older appmult-fx)")
            continue
        old, new = known[key], current[key]
        if old == new:
            continue
        if key == "costs" and isinstance(old, dict):
            changed = [
                f"{n} {old.get(n, '-')} -> {new.get(n, '-')}"
                for n in sorted(set(old) | set(new))
                if old.get(n) != new.get(n)
            ]
            out.append(f"{label}: {', '.join(changed)}")
        elif key in ("model", "graph", "calibration", "validation", "candidates"):
            out.append(label)
        else:
            out.append(f"{label}: {_short(old)} -> {_short(new)}")
    return out


def check_identity(study: optuna.Study, identity: dict[str, Any], where: str) -> None:
    """Record ``identity`` in a new study, or refuse one made from other inputs (its stored
    trials' energies and accuracies would not be those of this search)."""
    known = study.user_attrs.get("problem")
    if known is None:
        if study.get_trials(deepcopy=False):
            known = {}
        else:
            study.set_user_attr("problem", identity)
            return
    diffs = identity_differences(known, identity)
    if diffs:
        raise ValueError(
            f"{where} holds trials made from other inputs, so their energies and accuracies "
            "are not those of this search; what differs: "
            + "; ".join(diffs)
            + ". Give another output folder or study name (--out / --study-name; storage= / "
            "study_name=), or delete the study to start over"
        )


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


def distinct_assignments(study: optuna.Study) -> int:
    """How many distinct assignments the study's complete trials evaluated (a trial that
    repeats one reuses its values and does not count toward the budget)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return len({tuple(sorted(t.params.items())) for t in done})


def budget(problem: Problem, cfg: StudyConfig) -> tuple[int, int]:
    """``(distinct assignments to evaluate, cap on complete trials)``: ``cfg.trials`` or the
    size of the search space if smaller; the cap stops a sampler that keeps repeating
    evaluated assignments."""
    space = len(problem.candidates) ** len(problem.layers)
    target = min(cfg.trials, space)
    return target, 4 * target + 100


class _StopAtBudget:
    """Stops the study once it holds ``target`` distinct assignments or ``cap`` complete
    trials (all workers together)."""

    def __init__(self, target: int, cap: int) -> None:
        self.target, self.cap = target, cap

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        distinct = len({tuple(sorted(t.params.items())) for t in done})
        if distinct >= self.target or len(done) >= self.cap:
            study.stop()


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
    """Run trials of the study until it holds ``cfg.trials`` distinct evaluated assignments
    (see :func:`budget`); returns how many trials this worker ran (at most ``limit``).
    ``barrier`` (spawned workers) makes every worker start together; ``keep_memory``
    (spawned workers of a process that kept freed memory) sets
    :func:`~appmult_fx.allocator.keep_freed_memory` here too."""
    if keep_memory:
        keep_freed_memory()
    if threads is not None:
        torch.set_num_threads(threads)
    engine = problem.engine()
    study = load_study(cfg, worker, backend)
    if barrier is not None:
        barrier.wait()
    target, cap = budget(problem, cfg)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if distinct_assignments(study) >= target or complete >= cap:
        return 0
    before = len(study.get_trials(deepcopy=False))
    study.optimize(
        make_objective(problem, engine, worker),
        n_trials=limit,
        callbacks=[_StopAtBudget(target, cap)],
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
