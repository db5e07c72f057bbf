"""Retraining chosen search points through the existing workflow (``amx.retrain``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..app.train import TrainConfig
from ..app.workflow import retrain
from .outputs import LOSSES


def retrain_specs(
    float_checkpoint: str | Path,
    specs: dict[str, Path],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    gradient: str = "lut",
    calib_batches: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Retrain each ``label -> spec file`` from the float checkpoint; finished runs in
    ``out_dir/retrain`` are resumed. Returns ``label -> workflow report`` (``initial_acc`` =
    test accuracy before retraining, ``final_acc`` after)."""
    out = Path(out_dir) / "retrain"
    reports = {}
    for label, spec in specs.items():
        run_cfg = replace(cfg, checkpoint=str(out / f"{label}.pt"))
        reports[label] = retrain(
            float_checkpoint,
            {"file": str(spec)},
            run_cfg,
            gradient=gradient,
            calib_batches=calib_batches,
            resume=True,
            report_path=out / f"{label}.json",
            label=label,
        )
    return reports


def retrain_summary(
    reports: dict[str, dict[str, Any]], energies: dict[str, float], reference: str
) -> tuple[str, dict[str, Any]]:
    """Markdown table (test accuracy before/after, energy saved vs the retrained best uniform
    ``reference``) and the energy saved at each loss threshold after retraining."""
    ref = reports[reference]
    rows = [
        "| point | energy | saved vs best uniform (%) | test before | test after |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in sorted(reports, key=lambda k: energies[k]):
        r = reports[label]
        rows.append(
            f"| {label} | {energies[label]:.4f} | "
            f"{100 * (1 - energies[label] / energies[reference]):.1f} | "
            f"{100 * r['initial_acc']:.2f} | {100 * r['final_acc']:.2f} |"
        )
    summary: dict[str, Any] = {}
    for loss in LOSSES:
        ok = [k for k, r in reports.items() if r["final_acc"] >= ref["final_acc"] - loss - 1e-12]
        best = min(ok, key=lambda k: energies[k])
        summary[f"<= {100 * loss:.1f} points"] = {
            "point": best,
            "energy": energies[best],
            "saved": 1 - energies[best] / energies[reference],
            "test_after": reports[best]["final_acc"],
        }
    lines = [f"| {k} | {v['point']} | {100 * v['saved']:.1f} |" for k, v in summary.items()]
    text = (
        "\n## After retraining (test accuracy, workflow calibration)\n\n"
        + "\n".join(rows)
        + "\n\n| accuracy loss allowed (test, after retraining) | point | energy saved (%) |\n"
        + "|---|---|---:|\n"
        + "\n".join(lines)
        + "\n"
    )
    return text, summary
