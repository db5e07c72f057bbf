"""``summarize``: each multiplier's exact-quantized baseline is the exact multiplier of its own
width and signedness."""

from __future__ import annotations

from appmult_fx.app.report import summarize


def _run(label: str, bits, signed: bool, gradient: str, final: float) -> dict:
    mult = {"name": label, "bits": bits, "signed": signed, "layers": 5}
    return {
        "label": label,
        "gradient": gradient,
        "seed": 0,
        "multipliers": [mult],
        "float_acc": 0.95,
        "initial_acc": 0.5,
        "final_acc": final,
        "wall_time_s": 1.0,
    }


def test_baselines_are_per_width_and_signedness() -> None:
    runs = [
        _run("mul8x4u_trunc3", "8x4", False, "lut", 0.90),
        _run("mul8x4s_trunc3", "8x4", True, "lut", 0.80),
        _run("mul8u_trunc3", 8, False, "lut", 0.93),
    ]
    exact = {
        ("8x4", False): [_run("mul8x4u_exact", "8x4", False, "ste", 0.91)],
        ("8x4", True): [_run("mul8x4s_exact", "8x4", True, "ste", 0.55)],
        (8, False): [_run("mul8u_exact", 8, False, "ste", 0.94)],
    }
    rows = {r["multiplier"]: r for r in summarize(runs, exact)}
    assert rows["mul8x4u_trunc3"]["exact"] == 0.91 and rows["mul8x4u_trunc3"]["bits"] == "8x4"
    assert rows["mul8x4s_trunc3"]["exact"] == 0.55
    assert rows["mul8u_trunc3"]["exact"] == 0.94 and rows["mul8u_trunc3"]["lut"] == 0.93
