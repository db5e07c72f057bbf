"""Search results: points, the Pareto front, uniform baselines and their specs."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..passes.spec import Spec
from .sensitivity import Sensitivity


@dataclass(frozen=True)
class SearchPoint:
    """One evaluated assignment: layer -> candidate name, relative energy (1.0 = exact
    everywhere), validation accuracy (0..1) and, once measured, test accuracy."""

    assignment: dict[str, str]
    energy: float
    accuracy: float
    trial: int | None = None
    label: str = ""
    test_accuracy: float | None = None

    def dominates(self, other: SearchPoint) -> bool:
        """No worse in both objectives and better in one."""
        return (
            self.energy <= other.energy
            and self.accuracy >= other.accuracy
            and (self.energy < other.energy or self.accuracy > other.accuracy)
        )


def pareto_front(points: Sequence[SearchPoint]) -> list[SearchPoint]:
    """The non-dominated points (one per distinct objective pair), sorted by energy."""
    front: list[SearchPoint] = []
    seen: set[tuple[float, float]] = set()
    for p in sorted(points, key=lambda q: (q.energy, -q.accuracy)):
        key = (p.energy, p.accuracy)
        if key in seen or any(q.dominates(p) for q in points):
            continue
        seen.add(key)
        front.append(p)
    return front


@dataclass
class SearchResult:
    """What :func:`appmult_fx.search` returns.

    ``points``: every completed trial; ``baselines``: every uniform assignment (one candidate
    in every layer), evaluated the same way; ``pareto``: the non-dominated points and
    baselines, sorted by energy; ``spec(point)``: the :class:`Spec` that converts the model
    as the point says.
    """

    points: list[SearchPoint]
    baselines: list[SearchPoint]
    layers: list[str]
    candidates: dict[str, Any]  # name -> Multiplier
    macs: dict[str, int]
    costs: dict[str, float]
    reference_cost: float
    sensitivity: Sensitivity | None = None
    exact: Any = None  # the exact multiplier every layer outside the search keeps
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pareto(self) -> list[SearchPoint]:
        """Non-dominated points of the search and uniform baselines, sorted by energy (a trial
        is kept over a baseline of the same assignment)."""
        return pareto_front(self.points + self.baselines)

    @property
    def best_uniform(self) -> SearchPoint:
        """The most accurate uniform assignment (lowest energy on ties)."""
        return min(self.baselines, key=lambda p: (-p.accuracy, p.energy))

    def spec(self, point: SearchPoint) -> Spec:
        """A spec assigning each layer its candidate of ``point`` (layers outside the search
        keep the exact multiplier, as they were evaluated)."""
        spec = Spec() if self.exact is None else Spec().set_global(self.exact)
        for layer, name in point.assignment.items():
            spec.set_module_name(layer, self.candidates[name])
        return spec

    def cheapest_within(self, loss: float, test: bool = False) -> SearchPoint | None:
        """The lowest-energy Pareto point whose accuracy is at most ``loss`` (0..1) below the
        best uniform assignment's (validation accuracies; ``test=True``: test accuracies)."""

        def acc(p: SearchPoint) -> float | None:
            return p.test_accuracy if test else p.accuracy

        ref = acc(self.best_uniform)
        if ref is None:
            return None
        ok = [p for p in self.pareto if acc(p) is not None and acc(p) >= ref - loss - 1e-12]
        return min(ok, key=lambda p: p.energy) if ok else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (multipliers by name; sha256 and cost alongside)."""
        return {
            "layers": self.layers,
            "macs": self.macs,
            "candidates": {
                n: {"sha256": m.sha256, "cost": self.costs[n]} for n, m in self.candidates.items()
            },
            "reference_cost": self.reference_cost,
            "pareto": [asdict(p) for p in self.pareto],
            "baselines": [asdict(p) for p in self.baselines],
            "points": len(self.points),
            "sensitivity": None if self.sensitivity is None else self.sensitivity.to_dict(),
            **self.info,
        }


def save_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path
