"""Reports of retraining runs: JSON files, the STE-vs-LUT Markdown table and accuracy plot.

A run report (``appmult-fx retrain --report``) is a JSON object with, among others,
``float_acc``, ``initial_acc``, ``final_acc`` (0..1), ``gradient``, ``seed``,
``multipliers`` (``name``, ``sha256``, ``bits``, ``signed``, ``layers``) and ``history`` (one row
per epoch: ``epoch``, ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``, ``lr``,
``seconds``). :func:`summarize` groups several reports by multiplier and gradient mode.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _mean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def summarize(
    runs: list[dict[str, Any]], exact: dict[tuple[int | str, bool], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One row per multiplier: mean float, exact-quantized, initial, STE and LUT accuracies.

    ``runs`` are retrain reports tagged with ``label``; ``exact`` maps ``(width, signed)`` (width
    ``8``, or ``"8x4"`` for a rectangular multiplier) to the reports of retraining with the exact
    multiplier of that width and signedness (the quantization baseline).
    """
    by_label: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    order: list[str] = []
    for r in runs:
        if r["label"] not in by_label:
            order.append(r["label"])
        by_label[r["label"]][r["gradient"]].append(r)
    rows = []
    for label in order:
        groups = by_label[label]
        every = [r for g in groups.values() for r in g]
        first = every[0]["multipliers"][0] if every[0]["multipliers"] else {}
        bits, signed = first.get("bits"), first.get("signed")
        rows.append(
            {
                "multiplier": label,
                "bits": bits,
                "seeds": sorted({r["seed"] for r in every}),
                "float": _mean(r["float_acc"] for r in every),
                "exact": _mean(r["final_acc"] for r in exact.get((bits, signed), [])),
                "initial": _mean(r["initial_acc"] for r in every),
                "ste": _mean(r["final_acc"] for r in groups.get("ste", [])),
                "lut": _mean(r["final_acc"] for r in groups.get("lut", [])),
                "ste_seconds": _mean(r["wall_time_s"] for r in groups.get("ste", [])),
                "lut_seconds": _mean(r["wall_time_s"] for r in groups.get("lut", [])),
            }
        )
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The Table-II-style Markdown table (accuracies in %, means over seeds) with a mean row."""
    head = (
        "| multiplier | bits | float | exact-quantized | initial | STE | LUT-gradient "
        "| LUT - STE |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        diff = None if r["ste"] is None or r["lut"] is None else r["lut"] - r["ste"]
        lines.append(
            f"| {r['multiplier']} | {r['bits']} | {_pct(r['float'])} | {_pct(r['exact'])} | "
            f"{_pct(r['initial'])} | {_pct(r['ste'])} | {_pct(r['lut'])} | "
            f"{'-' if diff is None else f'{100 * diff:+.2f}'} |"
        )
    if len(rows) > 1:
        m = {k: _mean(r[k] for r in rows) for k in ("float", "exact", "initial", "ste", "lut")}
        diff = None if m["ste"] is None or m["lut"] is None else m["lut"] - m["ste"]
        gap = "-" if diff is None else f"{100 * diff:+.2f}"
        lines.append(
            f"| **mean** | | {_pct(m['float'])} | {_pct(m['exact'])} | {_pct(m['initial'])} | "
            f"{_pct(m['ste'])} | {_pct(m['lut'])} | {gap} |"
        )
    return head + "\n".join(lines) + "\n"


def plot_curves(runs: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """PNG of test accuracy per epoch (epoch 0 = right after conversion), mean over seeds:
    one colour per multiplier, dashed = STE, solid = LUT gradients."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    curves: dict[tuple[str, str], list[list[float]]] = defaultdict(list)
    for r in runs:
        curves[(r["label"], r["gradient"])].append(
            [r["initial_acc"]] + [h["test_acc"] for h in r["history"]]
        )
    labels = list(dict.fromkeys(label for label, _ in curves))
    colours = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(8, 5))
    for (label, grad), ys in curves.items():
        n = min(len(y) for y in ys)
        mean = [statistics.fmean(y[i] for y in ys) * 100 for i in range(n)]
        ax.plot(
            range(n),
            mean,
            color=colours(labels.index(label)),
            linestyle="--" if grad == "ste" else "-",
            marker="o",
            markersize=3,
            label=f"{label} ({grad})",
        )
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0 = after conversion)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "retraining: STE (dashed) vs LUT gradients (solid)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def before_after_table(float_acc: float, initial_acc: float, retrained_acc: float) -> str:
    """The demo's three-line accuracy table (in %)."""
    return (
        f"{'stage':<28}{'accuracy':>10}\n"
        f"{'float model':<28}{100 * float_acc:>9.2f}%\n"
        f"{'after conversion (initial)':<28}{100 * initial_acc:>9.2f}%\n"
        f"{'after retraining':<28}{100 * retrained_acc:>9.2f}%\n"
    )
