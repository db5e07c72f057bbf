"""Comparison of retraining runs: :func:`compare` runs :func:`.workflow.retrain` over
multipliers x seeds x {STE, LUT} plus the exact multiplier of each bit width, and writes a
Markdown table, a PNG plot and a JSON summary.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .report import markdown_table, plot_curves, summarize, write_json
from .train import TrainConfig, load_checkpoint
from .workflow import retrain, run_environment


def compare(
    float_checkpoint: str | Path,
    multipliers: list[str],
    seeds: list[int],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    gradients: tuple[str, ...] = ("ste", "lut"),
    exact: bool = True,
    calib_batches: int | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Retrain with every multiplier x seed x gradient mode (reports already in ``out_dir``
    are reused, so an interrupted comparison continues); writes ``results.md``,
    ``accuracy.png`` and ``summary.json``. Returns the summary."""
    from appmult_fx import Spec

    out = Path(out_dir)
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    # by (width, signed): width 8, or "8x4" for a rectangular multiplier
    exact_runs: dict[tuple[int | str, bool], list[dict[str, Any]]] = {}
    widths: list[tuple[int | str, bool]] = []
    resolved = [Spec().set_global(ref).global_rule.multiplier for ref in multipliers]
    for mult in resolved:  # all refused before any run starts
        if mult.kind != "int":
            raise ValueError(
                f"{mult.name}: compare runs integer multipliers (with their exact baseline); "
                "train FP multipliers with `appmult-fx fp-train`"
            )
    for ref, mult in zip(multipliers, resolved, strict=True):
        width = mult.bits if isinstance(mult.bits, int) else mult.widths
        if (width, mult.signed) not in widths:
            widths.append((width, mult.signed))
        for seed in seeds:
            for grad in gradients:
                runs.append(
                    _run_once(float_checkpoint, ref, mult.name, grad, seed, cfg, out, calib_batches)
                )
    if exact:
        for bits, signed in widths:
            name = f"mul{bits}{'s' if signed else 'u'}_exact"
            exact_runs[(bits, signed)] = [
                _run_once(float_checkpoint, name, name, "ste", s, cfg, out, calib_batches)
                for s in seeds
            ]
    rows = summarize(runs, exact_runs)
    wall = time.perf_counter() - start
    ck = load_checkpoint(float_checkpoint)
    header = (
        f"Model `{ck['model_args']['name']}` on `{ck['data']['name']}`, {cfg.epochs} retraining "
        f"epochs, seeds {seeds}; accuracies in % (means over seeds); exact-quantized = the same "
        f"retraining with the exact multiplier of the same width.\n\n"
    )
    every = runs + [r for rs in exact_runs.values() for r in rs]
    run_time = sum(r["wall_time_s"] for r in every)
    footer = (
        f"\nCommand: `{command}`\n\nWall time: {run_time:.0f} s summed over the {len(every)} "
        f"retraining runs ({run_environment(cfg)['device']}); this call took {wall:.0f} s "
        "(finished runs found in the output folder are reused).\n"
    )
    (out / "results.md").write_text(header + markdown_table(rows) + footer)
    plot_curves(
        every,
        out / "accuracy.png",
        title=f"{ck['model_args']['name']} on {ck['data']['name']}",
    )
    summary = {
        "rows": rows,
        "wall_time_s": wall,
        "run_time_s": run_time,
        "command": command,
        "seeds": seeds,
        "epochs": cfg.epochs,
    }
    write_json(out / "summary.json", summary)
    return summary


def _run_once(
    float_checkpoint: str | Path,
    ref: str,
    label: str,
    grad: str,
    seed: int,
    cfg: TrainConfig,
    out: Path,
    calib_batches: int | None,
) -> dict[str, Any]:
    slug = re.sub(r"[^A-Za-z0-9_.+-]", "_", label)
    report_path = out / "runs" / f"{slug}-{grad}-seed{seed}.json"
    if report_path.is_file():
        return json.loads(report_path.read_text())
    run_cfg = replace(
        cfg, seed=seed, checkpoint=str(out / "checkpoints" / f"{slug}-{grad}-seed{seed}.pt")
    )
    return retrain(
        float_checkpoint,
        {"multiplier": ref},
        run_cfg,
        gradient=grad,
        calib_batches=calib_batches,
        resume=True,
        report_path=report_path,
        label=label,
    )
