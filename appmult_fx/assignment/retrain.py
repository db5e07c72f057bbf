"""Retraining chosen search points through the existing workflow (``amx.retrain``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..app.train import TrainConfig, evaluate, resolve_device
from ..app.workflow import retrain_model
from .outputs import LOSSES

VALIDATION_BASIS = (
    "accuracy after retraining on the search's validation split (training examples held back "
    "from the search's scoring; retraining uses the whole training set, so they were seen "
    "there); the test split is never used to choose"
)


def retrain_specs(
    float_checkpoint: str | Path,
    specs: dict[str, Path],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    gradient: str = "lut",
    calib_batches: int | None = None,
    validation: Dataset | None = None,
) -> dict[str, dict[str, Any]]:
    """Retrain each ``label -> spec file`` from the float checkpoint; finished runs in
    ``out_dir/retrain`` are resumed. Returns ``label -> workflow report`` (``initial_acc`` =
    test accuracy before retraining, ``final_acc`` after; with ``validation``, also
    ``validation_acc``: the retrained model's accuracy on it)."""
    out = Path(out_dir) / "retrain"
    reports = {}
    for label, spec in specs.items():
        run_cfg = replace(cfg, checkpoint=str(out / f"{label}.pt"))
        gm, report = retrain_model(
            float_checkpoint,
            {"file": str(spec)},
            run_cfg,
            gradient=gradient,
            calib_batches=calib_batches,
            resume=True,
            report_path=out / f"{label}.json",
            label=label,
        )
        if validation is not None:
            report = dict(report)
            report["validation_acc"] = evaluate(
                gm, validation, batch_size=cfg.eval_batch_size, device=resolve_device(cfg.device)
            )["acc"]
        reports[label] = report
    return reports


def retrain_summary(
    reports: dict[str, dict[str, Any]], energies: dict[str, float], reference: str
) -> tuple[str, dict[str, Any]]:
    """Markdown table (validation accuracy after retraining, test accuracy before/after,
    energy saved vs the retrained best uniform ``reference``) and, at each loss threshold, the
    cheapest point by **validation** accuracy after retraining (``validation_acc`` of the
    reports). The test accuracies are outcomes only: they never choose. Reports without a
    validation figure are refused."""
    missing = sorted(k for k, r in reports.items() if r.get("validation_acc") is None)
    if missing:
        raise ValueError(
            f"retrained points {missing} have no validation accuracy; the loss thresholds are "
            "chosen by validation accuracy, never by test accuracy"
        )
    ref = reports[reference]
    rows = [
        "| point | energy | saved vs best uniform (%) | validation after | test before "
        "| test after |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in sorted(reports, key=lambda k: energies[k]):
        r = reports[label]
        rows.append(
            f"| {label} | {energies[label]:.4f} | "
            f"{100 * (1 - energies[label] / energies[reference]):.1f} | "
            f"{100 * r['validation_acc']:.2f} | "
            f"{100 * r['initial_acc']:.2f} | {100 * r['final_acc']:.2f} |"
        )
    summary: dict[str, Any] = {}
    floor = ref["validation_acc"]
    for loss in LOSSES:
        ok = [k for k, r in reports.items() if r["validation_acc"] >= floor - loss - 1e-12]
        best = min(ok, key=lambda k: (energies[k], -reports[k]["validation_acc"]))
        summary[f"<= {100 * loss:.1f} points"] = {
            "point": best,
            "energy": energies[best],
            "saved": 1 - energies[best] / energies[reference],
            "validation_after": reports[best]["validation_acc"],
            "test_after": reports[best]["final_acc"],
            "chosen_by": "validation accuracy after retraining",
        }
    lines = [
        f"| {k} | {v['point']} | {100 * v['saved']:.1f} | {100 * v['validation_after']:.2f} | "
        f"{100 * v['test_after']:.2f} |"
        for k, v in summary.items()
    ]
    text = (
        "\n## After retraining (workflow calibration)\n\n"
        + "\n".join(rows)
        + f"\n\nChosen by {VALIDATION_BASIS}; test accuracy is reported only.\n\n"
        + "| accuracy loss allowed (validation, after retraining) | point | energy saved (%) "
        "| validation after | test after |\n"
        + "|---|---|---:|---:|---:|\n"
        + "\n".join(lines)
        + "\n"
    )
    return text, summary
