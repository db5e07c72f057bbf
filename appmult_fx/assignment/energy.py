"""The energy model of a per-layer assignment.

``energy = SUM_layers MACs(layer) * cost(multiplier of the layer)``, divided by the energy of
the same network on an exact multiplier of the same widths (float layers and layers outside the
search count as exact). The cost of a multiplier is a hardware figure (``power_mw`` by default,
or ``area_um2``...) from ``Multiplier.hardware``, or a number the user gives per multiplier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

WidthKey = tuple[int, int, bool]  # (bits_a, bits_b, signed)


def width_key(mult: Any) -> WidthKey:
    """``(bits_a, bits_b, signed)`` of a multiplier: what "exact multiplier of the same widths"
    means."""
    return (int(mult.bits_a), int(mult.bits_b), bool(mult.signed))


def width_label(key: WidthKey) -> str:
    """``8x8 unsigned`` style label of a width key."""
    return f"{key[0]}x{key[1]} {'signed' if key[2] else 'unsigned'}"


def is_exact(mult: Any) -> bool:
    """Whether ``mult``'s table equals the exact product of its operands."""
    return bool(torch.equal(mult.table, mult.exact_table()))


def candidate_costs(
    candidates: Sequence[Any], cost: str = "power_mw", costs: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Cost of each candidate: ``costs[name]`` when given, else ``hardware[cost]``.

    Raises (naming every multiplier without a figure and how to give one) rather than guess,
    and for a ``costs`` name that is no candidate (a typo would leave its candidate's own
    figure in use).
    """
    costs = dict(costs or {})
    unknown = sorted(set(costs) - {m.name for m in candidates})
    if unknown:
        raise ValueError(
            f"costs given for {unknown}, which are not candidates "
            f"(candidates: {sorted(m.name for m in candidates)})"
        )
    out: dict[str, float] = {}
    missing = []
    for m in candidates:
        figures = m.hardware or {}
        value = costs.get(m.name, figures.get(cost))
        if value is None:
            missing.append(m.name)
            continue
        value = float(value)
        if not value >= 0.0 or value == float("inf"):
            raise ValueError(f"multiplier {m.name!r}: cost {value!r} must be finite and >= 0")
        out[m.name] = value
    if missing:
        raise ValueError(
            f"no {cost!r} figure for multiplier(s) {missing}: give one with "
            f"mult.with_hardware({cost}=...) / `--power NAME=VALUE`, or pass costs={{name: value}} "
            "(a proxy cost of your own, e.g. area)"
        )
    return out


def reference_cost(
    candidates: Sequence[Any], costs: Mapping[str, float], given: float | None = None
) -> float:
    """Cost of the exact multiplier of the candidates' widths: ``given``, else the cost of the
    exact candidates. Refuses when neither is known, and when figures conflict (two exact
    candidates with different costs, or ``given`` differing from an exact candidate's cost):
    the energies would otherwise depend on which one came first."""
    exact = [m for m in candidates if m.name in costs and is_exact(m)]
    if given is not None:
        given = float(given)
        if not given > 0.0 or given == float("inf"):
            raise ValueError(f"the exact multiplier's cost must be finite and > 0, got {given!r}")
    figures = {m.name: float(costs[m.name]) for m in exact}
    if given is not None:
        figures = {"reference cost (reference_cost= / --reference-power)": given, **figures}
    if not figures:
        key = width_label(width_key(candidates[0])) if candidates else "?"
        raise ValueError(
            f"no cost is known for an exact {key} multiplier, so energies cannot be made relative: "
            "include an exact multiplier with a figure among the candidates (e.g. EvoApproxLib "
            "mul8u_1JFF) or pass reference_cost= / `--reference-power MW`"
        )
    if len(set(figures.values())) > 1:
        listed = ", ".join(f"{n}: {v:g}" for n, v in figures.items())
        raise ValueError(
            f"conflicting costs for the exact multiplier ({listed}); these multipliers compute "
            "the same exact product, so give them one figure (costs={name: value} / "
            "`--power NAME=VALUE`), or keep only one exact candidate"
        )
    value = next(iter(figures.values()))
    if not value > 0.0:
        raise ValueError(f"exact multiplier {next(iter(figures))!r} has cost {value}; expected > 0")
    return value


@dataclass(frozen=True)
class EnergyModel:
    """MACs per layer (one sample) and per-candidate costs; :meth:`energy` of an assignment."""

    macs: dict[str, int]  # every multiply layer of the model, searched or not
    costs: dict[str, float]  # candidate name -> cost
    reference: float  # cost of the exact multiplier of the same widths

    def __post_init__(self) -> None:
        unknown = [n for n, v in self.macs.items() if v is None]
        if unknown:
            raise ValueError(
                f"layers {unknown} have no MAC count: convert with example_inputs so shapes are "
                "known"
            )

    @property
    def exact_energy(self) -> float:
        """Energy of the whole network on the exact multiplier (cost x MACs)."""
        return self.reference * sum(self.macs.values())

    def absolute(self, assignment: Mapping[str, str]) -> float:
        """``SUM MACs x cost``; layers the assignment does not name count as exact."""
        unknown = set(assignment) - set(self.macs)
        if unknown:
            raise ValueError(f"assignment names unknown layers {sorted(unknown)}")
        total = 0.0
        for layer, macs in self.macs.items():
            name = assignment.get(layer)
            total += macs * (self.reference if name is None else self.costs[name])
        return total

    def energy(self, assignment: Mapping[str, str]) -> float:
        """Energy relative to the exact network (1.0 = the exact multiplier everywhere)."""
        return self.absolute(assignment) / self.exact_energy
