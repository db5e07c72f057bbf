"""Heatmaps of a multiplier: the error ``a*b - LUT`` and both gradient LUTs (Agg, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .indexing import operand_values
from .multiplier import Multiplier


def _value_ordered(table: np.ndarray, va: np.ndarray, vb: np.ndarray) -> np.ndarray:
    return table[np.ix_(np.argsort(va, kind="stable"), np.argsort(vb, kind="stable"))]


def plot_multiplier(mult: Multiplier, path: str | Path, dpi: int = 120) -> Path:
    """Write a PNG with heatmaps of ``a*b - LUT`` and, when present, ``grad_a`` and ``grad_b``.

    Rows are the first operand ``a``, columns the second ``b``, both in increasing value.
    """
    va = operand_values(mult.bits_a, mult.signed).numpy()
    vb = operand_values(mult.bits_b, mult.signed).numpy()
    error = (mult.exact_table() - mult.table.to(mult.exact_table().dtype)).numpy()
    panels = [("error a*b - LUT", error, "RdBu_r")]
    if mult.grad_a is not None and mult.grad_b is not None:
        panels += [
            ("grad_a = d LUT / d a", mult.grad_a.numpy(), "viridis"),
            ("grad_b = d LUT / d b", mult.grad_b.numpy(), "viridis"),
        ]
    fig = Figure(figsize=(5.2 * len(panels), 4.6))
    FigureCanvasAgg(fig)
    extent = (vb.min() - 0.5, vb.max() + 0.5, va.max() + 0.5, va.min() - 0.5)
    for k, (title, data, cmap) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        data = _value_ordered(data, va, vb)
        kwargs: dict = {"cmap": cmap, "extent": extent, "interpolation": "nearest"}
        kwargs["aspect"] = "auto" if len(va) != len(vb) else "equal"
        if cmap == "RdBu_r":
            limit = float(np.abs(data).max()) or 1.0
            kwargs.update(vmin=-limit, vmax=limit)  # zero error is white
        image = ax.imshow(data, **kwargs)
        ax.set_title(title)
        ax.set_xlabel("b (second operand, weight)")
        ax.set_ylabel("a (first operand, activation)")
        fig.colorbar(image, ax=ax, shrink=0.85)
    fig.suptitle(f"{mult.name} ({mult.widths}-bit {'signed' if mult.signed else 'unsigned'})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both coordinates (lower is better),
    in increasing first coordinate."""
    order = sorted(range(len(points)), key=lambda k: points[k])
    front: list[int] = []
    best = float("inf")
    for k in order:
        if points[k][1] < best:
            front.append(k)
            best = points[k][1]
    return front


def plot_tradeoff(
    entries: list[dict[str, Any]],
    path: str | Path,
    error: str = "mred",
    cost: str = "power_mw",
    dpi: int = 120,
) -> tuple[Path, list[str]]:
    """Scatter catalogue entries (:mod:`.catalogue`): hardware ``cost`` against ``error``
    metric, the Pareto front marked and labelled. Returns the PNG and the front's names;
    entries without the cost figure are left out (and counted in the title)."""
    usable = [e for e in entries if (e.get("hardware") or {}).get(cost) is not None]
    points = [(float(e["hardware"][cost]), float(e["metrics"][error])) for e in usable]
    front = pareto_front(points)
    fig = Figure(figsize=(7, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if points:
        ax.scatter(*zip(*points, strict=True), s=18, c="tab:gray", label="multipliers")
        fx, fy = zip(*(points[k] for k in front), strict=True)
        ax.plot(fx, fy, "o-", c="tab:red", ms=6, label="Pareto front")
        for k in front:
            ax.annotate(usable[k]["name"], points[k], fontsize=7, xytext=(4, 4),
                        textcoords="offset points")  # fmt: skip
    ax.set_xlabel(cost)
    ax.set_ylabel(error)
    left_out = len(entries) - len(usable)
    ax.set_title(
        f"{len(usable)} multipliers" + (f" ({left_out} without {cost})" if left_out else "")
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path, [usable[k]["name"] for k in front]
