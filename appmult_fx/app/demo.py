"""``appmult-fx demo``: the whole retraining story on built-in data in a few minutes.

Trains a ResNet-8 on scikit-learn's 8x8 digits, converts it with a seed-like approximate
multiplier, retrains briefly with LUT gradients, prints float / initial / retrained accuracies
and exports the retrained model (ONNX + LUTs + manifest, ``amx.export``).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .report import before_after_table, write_json
from .train import TrainConfig
from .workflow import datasets, retrain_model, train_float

DEMO_MULTIPLIER = "mul7u_trunc7"  # 7-bit, 7 partial-product columns removed (like the seed's rm6)


def run_demo(
    *,
    multiplier: str | None = None,
    float_epochs: int = 4,
    epochs: int = 2,
    seed: int = 0,
    out_dir: str | None = None,
    json_path: str | None = None,
    quiet: bool = False,
    max_steps: int | None = None,
    model: str = "resnet8",
    export: bool = True,
) -> dict[str, Any]:
    """Run the demo and print its table; returns (and with ``json_path`` writes) the result."""
    start = time.perf_counter()
    why = "given on the command line"
    if multiplier is None:
        multiplier, why = (
            DEMO_MULTIPLIER,
            "built-in truncated multiplier, like the seed's vert_trunc ones",
        )
    print(f"appmult-fx demo: {model} on scikit-learn digits (8x8), multiplier {multiplier} ({why})")
    with tempfile.TemporaryDirectory(prefix="appmult-fx-demo-") as tmp:
        out = Path(out_dir or tmp)
        base = TrainConfig(
            epochs=float_epochs,
            seed=seed,
            quiet=quiet,
            max_steps_per_epoch=max_steps,
            checkpoint=str(out / "float.pt"),
        )
        print(f"1/3 training the float model ({float_epochs} epochs)")
        float_report = train_float(model, "digits", base)
        print(f"2/3 converting, calibrating, retraining with LUT gradients ({epochs} epochs)")
        cfg = replace(base, epochs=epochs, checkpoint=str(out / "retrained.pt"))
        gm, report = retrain_model(
            out / "float.pt",
            {"multiplier": multiplier},
            cfg,
            gradient="lut",
            calib_batches=max_steps,
            report_path=out / "retrained.json",
        )
        if export:
            from appmult_fx import export as export_model

            from .train import first_batch

            print("3/3 exporting to ONNX (model.onnx, model_portable.onnx, LUTs, manifest)")
            example = first_batch(datasets({"name": "digits"})[2])
            export_model(gm.eval(), example, out / "export", portable=True, progress=not quiet)
        result = {
            "float_acc": float_report["final_acc"],
            "initial_acc": report["initial_acc"],
            "retrained_acc": report["final_acc"],
            "multiplier": report["multipliers"],
            "model": model,
            "dataset": "digits",
            "gradient": "lut",
            "float_epochs": float_epochs,
            "epochs": epochs,
            "seed": seed,
            "export": str(out / "export") if export and out_dir else None,
            "wall_time_s": time.perf_counter() - start,
        }
    print(before_after_table(result["float_acc"], result["initial_acc"], result["retrained_acc"]))
    kept = f"; files in {out_dir}" if out_dir else " (pass --out DIR to keep the files)"
    print(f"done in {result['wall_time_s']:.0f} s{kept}")
    if json_path:
        write_json(json_path, result)
    return result
