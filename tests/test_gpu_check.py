"""bench/gpu_check.sh (the one-command GPU check) and its summary, rehearsed without a GPU:
syntax, per-stage JSON written whatever later stages do, targets judged from hand-made results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
SUMMARY = ROOT / "bench" / "gpu_check_summary.py"


def _run(out: Path, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHON=sys.executable, **env)
    return subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        capture_output=True,
        text=True,
        env=full,
        timeout=300,
        cwd=ROOT,
    )


def test_script_parses() -> None:
    assert shutil.which("bash")
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_failed_stage_still_writes_every_json(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        GPU_CHECK_DRY="1",
        GPU_CHECK_STAGES="tests env",
        GPU_CHECK_TESTS="tests/no_such_test_file.py",
    )
    assert result.returncode == 0, result.stderr  # rehearsal: reported, not enforced
    tests = json.loads((tmp_path / "stage_tests.json").read_text())
    assert tests["rc"] != 0 and "no_such_test_file" in tests["log_tail"]
    assert json.loads((tmp_path / "stage_env.json").read_text())["rc"] == 0
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["torch"] == torch.__version__
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stages"]["tests"]["rc"] != 0 and summary["ok"] is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU failure")
def test_real_run_without_a_gpu_fails_loudly(tmp_path: Path) -> None:
    result = _run(tmp_path, GPU_CHECK_STAGES="env")
    assert result.returncode == 1
    assert json.loads((tmp_path / "stage_env.json").read_text())["rc"] == 3


def _fake_results(out: Path, fwd7: float, fwd8: float, ratio: float) -> None:
    rows = []
    for bits, gmacs in ((7, fwd7), (8, fwd8)):
        for name, m, k, n, g in (
            ("layer1", 16384, 576, 64, gmacs),
            ("fc", 16, 512, 10, 1.0),
            ("layer3", 1024, 2304, 256, gmacs * 3),
        ):
            rows.append(
                {
                    "shape": name,
                    "M": m,
                    "K": k,
                    "N": n,
                    "bits": bits,
                    "product": "fwd",
                    "impl": "ours",
                    "gmacs": g,
                }
            )
    (out / "lut_gemm.json").write_text(json.dumps({"device": "cuda", "results": rows}))
    (out / "e2e.json").write_text(json.dumps({"device": "cuda", "ratio": ratio}))
    (out / "stage_bench.json").write_text(json.dumps({"rc": 0, "timed_out": False, "seconds": 1}))


@pytest.mark.parametrize(
    ("fwd7", "fwd8", "ratio", "ok"),
    [(5000.0, 3000.0, 2.5, True), (5000.0, 1000.0, 2.5, False), (5000.0, 3000.0, 3.5, False)],
)
def test_summary_judges_the_targets(tmp_path: Path, fwd7, fwd8, ratio, ok) -> None:
    """Median over the large shapes (the tiny fc is left out): 2*fwd G-LUT-MAC/s."""
    _fake_results(tmp_path, fwd7, fwd8, ratio)
    result = subprocess.run(
        [sys.executable, str(SUMMARY), str(tmp_path)], capture_output=True, text=True
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["targets"]["forward_7bit_tlutmacs"]["value"] == pytest.approx(fwd7 * 2 / 1000)
    assert summary["targets"]["forward_8bit_tlutmacs"]["value"] == pytest.approx(fwd8 * 2 / 1000)
    assert summary["ok"] is ok and result.returncode == (0 if ok else 1)
