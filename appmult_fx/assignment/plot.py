"""Figures of a search: the energy/accuracy front and the sensitivity heat map."""

from __future__ import annotations

import os
from pathlib import Path

from .result import SearchResult
from .sensitivity import Sensitivity


def _save(fig, path: str | Path) -> Path:  # noqa: ANN001
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_front(result: SearchResult, path: str | Path, title: str = "") -> Path:
    """Energy (relative to exact) vs validation accuracy: every trial, the Pareto front and
    the uniform assignments beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(
        [p.energy for p in result.points],
        [100 * p.accuracy for p in result.points],
        s=10,
        c="0.75",
        label="trials",
    )
    front = result.pareto
    ax.step(
        [p.energy for p in front],
        [100 * p.accuracy for p in front],
        where="post",
        c="C0",
        marker="o",
        ms=4,
        label="Pareto front",
    )
    ax.scatter(
        [p.energy for p in result.baselines],
        [100 * p.accuracy for p in result.baselines],
        marker="x",
        c="C3",
        s=40,
        label="uniform assignments",
    )
    for p in result.baselines:
        ax.annotate(
            p.label.removeprefix("uniform:"),
            (p.energy, 100 * p.accuracy),
            fontsize=6,
            xytext=(3, -8),
            textcoords="offset points",
        )
    ax.set_xlabel("energy relative to the exact multiplier")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title or "per-layer assignment search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_sensitivity(sens: Sensitivity, path: str | Path) -> Path:
    """Heat map: layers x candidates, colour = accuracy drop (points) or KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scale = 100.0 if sens.metric == "accuracy" else 1.0
    data = np.array([[scale * sens.loss(l_, c) for c in sens.candidates] for l_ in sens.layers])
    fig, ax = plt.subplots(
        figsize=(1.2 + 0.6 * len(sens.candidates), 1.2 + 0.45 * len(sens.layers))
    )
    im = ax.imshow(data, cmap="magma_r", aspect="auto")
    ax.set_xticks(range(len(sens.candidates)), sens.candidates, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(sens.layers)), sens.layers, fontsize=7)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, f"{data[i, j]:.2g}", ha="center", va="center", fontsize=6, c="C2")
    label = "accuracy drop (points)" if sens.metric == "accuracy" else "KL (nats/sample)"
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title("sensitivity: one layer approximated, the rest exact", fontsize=9)
    out = _save(fig, path)
    plt.close(fig)
    return out
