"""Starting points of the search: uniform assignments and sensitivity-greedy ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .sensitivity import Sensitivity

GREEDY_BUDGETS = (0.03, 0.1, 0.3, 1.0, 3.0)  # x the largest single-layer loss


def uniform_assignments(layers: Sequence[str], names: Sequence[str]) -> list[dict[str, str]]:
    """One assignment per candidate: that candidate in every layer."""
    return [{layer: name for layer in layers} for name in names]


def greedy_assignment(
    sens: Sensitivity, costs: Mapping[str, float], macs: Mapping[str, int], budget: float
) -> dict[str, str]:
    """Start from each layer's least harmful candidate and repeatedly take the move (one
    layer to a cheaper candidate) that saves the most energy per unit of added loss, while the
    summed single-layer losses stay within ``budget``."""

    def loss(layer: str, cand: str) -> float:
        return max(0.0, sens.loss(layer, cand))

    current = {
        layer: min(sens.candidates, key=lambda c: (loss(layer, c), costs[c]))
        for layer in sens.layers
    }
    total = sum(loss(layer, c) for layer, c in current.items())
    while True:
        best = None
        for layer in sens.layers:
            cur = current[layer]
            for cand in sens.candidates:
                if costs[cand] >= costs[cur]:
                    continue
                added = loss(layer, cand) - loss(layer, cur)
                if total + added > budget:
                    continue
                saved = macs[layer] * (costs[cur] - costs[cand])
                score = (added <= 0.0, saved / max(added, 1e-12))
                if best is None or score > best[0]:
                    best = (score, layer, cand, added)
        if best is None:
            return current
        _, layer, cand, added = best
        current[layer] = cand
        total += added


def greedy_assignments(
    sens: Sensitivity,
    costs: Mapping[str, float],
    macs: Mapping[str, int],
    budgets: Sequence[float] = GREEDY_BUDGETS,
) -> list[dict[str, str]]:
    """Greedy assignments for loss budgets ``budgets`` x the largest single-layer loss
    (duplicates dropped)."""
    worst = max(
        (max(0.0, sens.loss(layer, c)) for layer in sens.layers for c in sens.candidates),
        default=0.0,
    )
    out: list[dict[str, str]] = []
    for f in budgets:
        a = greedy_assignment(sens, costs, macs, f * worst)
        if a not in out:
            out.append(a)
    return out
