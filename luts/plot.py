"""Heatmaps of a multiplier: the error ``a*b - LUT`` and both gradient LUTs (Agg, no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .indexing import operand_values
from .multiplier import Multiplier


def _value_ordered(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    return table[np.ix_(order, order)]


def plot_multiplier(mult: Multiplier, path: str | Path, dpi: int = 120) -> Path:
    """Write a PNG with heatmaps of ``a*b - LUT`` and, when present, ``grad_a`` and ``grad_b``.

    Rows are the first operand ``a``, columns the second ``b``, both in increasing value.
    """
    values = operand_values(mult.bits, mult.signed).numpy()
    error = (mult.exact_table() - mult.table.to(mult.exact_table().dtype)).numpy()
    panels = [("error a*b - LUT", error, "RdBu_r")]
    if mult.grad_a is not None and mult.grad_b is not None:
        panels += [
            ("grad_a = d LUT / d a", mult.grad_a.numpy(), "viridis"),
            ("grad_b = d LUT / d b", mult.grad_b.numpy(), "viridis"),
        ]
    fig = Figure(figsize=(5.2 * len(panels), 4.6))
    FigureCanvasAgg(fig)
    extent = (values.min() - 0.5, values.max() + 0.5, values.max() + 0.5, values.min() - 0.5)
    for k, (title, data, cmap) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        data = _value_ordered(data, values)
        kwargs: dict = {"cmap": cmap, "extent": extent, "interpolation": "nearest"}
        if cmap == "RdBu_r":
            limit = float(np.abs(data).max()) or 1.0
            kwargs.update(vmin=-limit, vmax=limit)  # zero error is white
        image = ax.imshow(data, **kwargs)
        ax.set_title(title)
        ax.set_xlabel("b (second operand, weight)")
        ax.set_ylabel("a (first operand, activation)")
        fig.colorbar(image, ax=ax, shrink=0.85)
    fig.suptitle(f"{mult.name} ({mult.bits}-bit {'signed' if mult.signed else 'unsigned'})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path
