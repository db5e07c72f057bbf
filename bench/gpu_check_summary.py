"""Summary of a ``bench/gpu_check.sh`` run: stage results and the GPU targets, as summary.json.

    python bench/gpu_check_summary.py OUT_DIR [--enforce 0|1]

Targets (H100/H200): LUT-GEMM forward >= 8 T-LUT-MAC/s at 7 bits and >= 4 at 8 bits (median
over the ResNet-18 CIFAR shapes of at least 1e8 multiply-accumulates), and a LUT-gradient
ResNet-18 training step <= 3x the float step. With ``--enforce 1`` the exit status is 1 when a
stage failed or a target was missed or not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

FORWARD_TARGETS = {7: 8.0, 8: 4.0}  # T-LUT-MAC/s
STEP_RATIO_TARGET = 3.0
LARGE_MACS = 1e8


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def forward_tlutmacs(bench: dict | None, bits: int) -> float | None:
    """Median forward T-LUT-MAC/s of our kernel over the large ResNet-18 shapes."""
    if bench is None:
        return None
    rows = [
        r
        for r in bench.get("results", [])
        if r["impl"] == "ours"
        and r["product"] == "fwd"
        and str(r["bits"]) == str(bits)  # "7" for a 7x7 table ("8x4" for a rectangular one)
        and not r["shape"].startswith("vit")
        and r["M"] * r["K"] * r["N"] >= LARGE_MACS
    ]
    return round(statistics.median(r["gmacs"] for r in rows) / 1000, 3) if rows else None


def summarize(out: Path) -> dict:
    """Stage records and targets of the run in ``out``."""
    stages = {}
    for path in sorted(out.glob("stage_*.json")):
        rec = _load(path) or {}
        stages[path.stem[len("stage_") :]] = {k: rec.get(k) for k in ("rc", "timed_out", "seconds")}
    bench, e2e = _load(out / "lut_gemm.json"), _load(out / "e2e.json")
    targets = {}
    for bits, target in FORWARD_TARGETS.items():
        value = forward_tlutmacs(bench, bits)
        targets[f"forward_{bits}bit_tlutmacs"] = {
            "value": value,
            "target": f">= {target}",
            "met": value is not None and value >= target,
        }
    ratio = e2e.get("ratio") if e2e else None
    targets["training_step_ratio"] = {
        "value": ratio,
        "target": f"<= {STEP_RATIO_TARGET}",
        "met": ratio is not None and ratio <= STEP_RATIO_TARGET,
    }
    ok = all(s["rc"] == 0 for s in stages.values()) and all(t["met"] for t in targets.values())
    return {
        "device": (bench or e2e or {}).get("device"),
        "stages": stages,
        "targets": targets,
        "ok": ok,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--enforce", type=int, choices=(0, 1), default=1)
    args = p.parse_args(argv)
    summary = summarize(args.out)
    tmp = args.out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, args.out / "summary.json")
    print(json.dumps(summary, indent=1))
    return 1 if args.enforce and not summary["ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
