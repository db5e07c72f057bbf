"""bench/step_faults.py: faults and time per step with and without ``keep_freed_memory``."""

from __future__ import annotations

import pytest

from tests.bench_scripts import load_bench_script


def _run(faults: float, step_s: float) -> dict:
    return {"faults": faults, "system_s": faults / 1e5, "step_s": step_s}


def test_summary_takes_medians_and_ratios_per_setting() -> None:
    module = load_bench_script("step_faults")
    runs = {
        "default": [
            {
                "float": _run(10, 1.0),
                "lut": _run(900, 3.0),
                "ste": _run(500, 2.0),
                "resident_mib": 500,
            },
            {
                "float": _run(30, 1.2),
                "lut": _run(700, 2.8),
                "ste": _run(300, 1.8),
                "resident_mib": 520,
            },
            {
                "float": _run(20, 0.8),
                "lut": _run(800, 2.6),
                "ste": _run(400, 1.6),
                "resident_mib": 510,
            },
        ],
        "keep": [
            {"float": _run(0, 1.0), "lut": _run(5, 2.5), "ste": _run(1, 1.5), "resident_mib": 600},
            {"float": _run(0, 0.9), "lut": _run(3, 2.7), "ste": _run(2, 1.7), "resident_mib": 610},
            {"float": _run(0, 1.1), "lut": _run(4, 2.6), "ste": _run(3, 1.6), "resident_mib": 590},
        ],
    }
    out = module.summary(runs)
    assert out["default"]["lut"] == {"faults": 800, "system_s": 800 / 1e5, "step_s": 2.8}
    assert out["keep"]["float"]["step_s"] == 1.0
    assert out["default"]["resident_mib"] == 510 and out["keep"]["resident_mib"] == 600
    assert out["keep_over_default"] == {"float": 1.0, "lut": round(2.6 / 2.8, 3), "ste": 0.889}
    assert out["over_float"]["default"] == {"lut": 2.8, "ste": 1.8}
    assert out["over_float"]["keep"] == {"lut": 2.6, "ste": 1.6}


@pytest.mark.parametrize(
    "argv", [["--rounds", "0"], ["--steps", "-1"], ["--threads", "0"], ["--batch", "0"]]
)
def test_counts_below_one_are_refused(argv: list[str], capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as stop:
        load_bench_script("step_faults").main(argv)
    assert stop.value.code == 2
    assert "expected a whole number >= 1" in capsys.readouterr().err


def test_an_unknown_multiplier_is_refused_before_any_process(capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as stop:
        load_bench_script("step_faults").main(["--mult", "mul8s_nosuch"])
    assert stop.value.code == 2
    assert "--mult" in capsys.readouterr().err
