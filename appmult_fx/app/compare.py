"""Comparison of retraining runs: :func:`compare` runs :func:`.workflow.retrain` over
multipliers x seeds x {STE, LUT} plus the exact multiplier of each bit width, and writes a
Markdown table, a PNG plot and a JSON summary.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .checkpoint import RESUME_FIELDS, checkpoint_digest, plain
from .paths import inside, same_path
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
    ``accuracy.png`` and ``summary.json``. Returns the summary.

    A finished run is reused only when it was run with the same float checkpoint (its content
    hash), multiplier table (sha256), gradient mode, seed, training arguments and calibration
    batches: the run's files are named after that key (:func:`run_key`). Two multipliers of one
    name with different tables get distinct rows, labelled ``name [sha256 prefix]``; the same
    multiplier given twice runs once."""
    from appmult_fx import Spec

    out = Path(out_dir)
    _refuse_overwriting_inputs(float_checkpoint, multipliers, out)
    ck = load_checkpoint(float_checkpoint)  # refused before any run when unusable
    float_digest = checkpoint_digest(float_checkpoint)
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
    tables: dict[str, set[str]] = {}
    for mult in resolved:
        tables.setdefault(mult.name, set()).add(mult.sha256)
    done: set[str] = set()
    for ref, mult in zip(multipliers, resolved, strict=True):
        if mult.sha256 in done:  # the same table named twice: one set of runs
            continue
        done.add(mult.sha256)
        label = mult.name if len(tables[mult.name]) == 1 else f"{mult.name} [{mult.sha256[:8]}]"
        width = mult.bits if isinstance(mult.bits, int) else mult.widths
        if (width, mult.signed) not in widths:
            widths.append((width, mult.signed))
        for seed in seeds:
            for grad in gradients:
                key = run_key(float_digest, mult.sha256, grad, seed, cfg, calib_batches)
                runs.append(_run_once(float_checkpoint, ref, label, cfg, out, key))
    if exact:
        for bits, signed in widths:
            name = f"mul{bits}{'s' if signed else 'u'}_exact"
            sha = Spec().set_global(name).global_rule.multiplier.sha256
            keys = [run_key(float_digest, sha, "ste", s, cfg, calib_batches) for s in seeds]
            exact_runs[(bits, signed)] = [
                _run_once(float_checkpoint, name, name, cfg, out, key) for key in keys
            ]
    rows = summarize(runs, exact_runs)
    wall = time.perf_counter() - start
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
        "(finished runs of the same multiplier table and arguments found in the output folder "
        "are reused).\n"
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


# what a comparison writes into its output folder (files, then folders)
OUTPUT_FILES = ("results.md", "summary.json", "accuracy.png")
OUTPUT_FOLDERS = ("runs", "checkpoints")


def _refuse_overwriting_inputs(float_checkpoint: str | Path, refs: list[str], out: Path) -> None:
    """``ValueError`` when the output folder, or a file the comparison writes in it, is one of
    its inputs (the float checkpoint, a multiplier file)."""
    inputs = [("--checkpoint", float_checkpoint)]
    inputs += [("--multipliers", r) for r in refs if Path(r).is_file()]
    for opt, path in inputs:
        clash = same_path(out, path) or any(same_path(out / f, path) for f in OUTPUT_FILES)
        if clash or any(inside(path, out / d) for d in OUTPUT_FOLDERS):
            raise ValueError(
                f"--out {out}: the comparison writes {', '.join(OUTPUT_FILES)}, runs/ and "
                f"checkpoints/ there, which would overwrite {opt} {path}; choose another folder"
            )


def run_key(
    float_digest: str,
    mult_sha256: str,
    gradient: str,
    seed: int,
    cfg: TrainConfig,
    calib_batches: int | None,
) -> dict[str, Any]:
    """Everything a run's result depends on: the float checkpoint's content hash, the
    multiplier's table hash, gradient mode, seed, training arguments, calibration batches."""
    return {
        "float_checkpoint_sha256": float_digest,
        "multiplier_sha256": mult_sha256,
        "gradient": gradient,
        "seed": seed,
        **plain({k: getattr(cfg, k) for k in RESUME_FIELDS if k != "seed"}),
        "eval_batch_size": cfg.eval_batch_size,
        "calib_batches": calib_batches,
    }


def _run_once(
    float_checkpoint: str | Path,
    ref: str,
    label: str,
    cfg: TrainConfig,
    out: Path,
    key: dict[str, Any],
) -> dict[str, Any]:
    """The report of the run ``key`` (:func:`run_key`) of multiplier ``ref``: reused from
    ``out/runs`` when finished, else retrained (resuming its checkpoint when interrupted)."""
    grad, seed = key["gradient"], key["seed"]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_")  # "m [1a2b]" -> "m_1a2b"
    stem = f"{slug}-{grad}-seed{seed}-{digest}"
    report_path = out / "runs" / f"{stem}.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        if report.get("run_key") == key:
            return report
    run_cfg = replace(cfg, seed=seed, checkpoint=str(out / "checkpoints" / f"{stem}.pt"))
    report = retrain(
        float_checkpoint,
        {"multiplier": ref},
        run_cfg,
        gradient=grad,
        calib_batches=key["calib_batches"],
        resume=True,
        report_path=None,
        label=label,
    )
    report["run_key"] = key
    write_json(report_path, report)
    return report
