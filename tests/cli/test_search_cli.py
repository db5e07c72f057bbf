"""``appmult-fx search`` end to end on the digits data (tiny budgets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import appmult_fx as amx
from appmult_fx.cli import main


@pytest.fixture(scope="module")
def float_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("float") / "float.pt"
    rc = main(["train", "--model", "lenet5", "--epochs", "1", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def test_search_writes_front_specs_report_and_retrains(tmp_path, float_checkpoint, capsys):
    out = tmp_path / "search"
    lut = tmp_path / "drum3.lut"  # a LUT-file candidate carrying its own power figure
    amx.multiplier("mul8u_drum3").with_hardware(power_mw=0.1).save(lut)
    args = ["search", "--checkpoint", str(float_checkpoint), "--candidates", "mul8u_exact"]
    args += [str(lut), "mul8u_trunc8", "--power", "mul8u_exact=0.4", "mul8u_trunc8=0.2"]
    args += ["--trials", "6", "--calib-batches", "1", "--out", str(out), "--quiet"]
    args += ["--retrain-epochs", "1", "--retrain-steps", "1", "--gradients", "lut"]
    assert main(args) == 0
    data = json.loads((out / "pareto.json").read_text())
    assert data["candidates"]["mul8u_drum3"]["cost"] == 0.1
    assert data["reference_cost"] == 0.4
    for entry in data["pareto"]:
        spec = amx.Spec.from_file(out / entry["spec"])
        gm = amx.convert(_model(float_checkpoint), spec)
        used = {r.name: r.multiplier_name for r in amx.layers(gm)}
        assert used == entry["assignment"]
    for name in ("results.md", "pareto.png", "sensitivity.png", "retrain.json"):
        assert (out / name).is_file()
    retrain = json.loads((out / "retrain.json").read_text())
    retrained = retrain["reports"]
    assert "best_uniform" in retrained and len(retrained) >= 2
    assert all(0.0 <= r["initial_acc"] <= 1.0 and r["final_acc"] >= 0.0 for r in retrained.values())
    # the thresholds after retraining are chosen on the validation split, never on test
    assert all(0.0 <= r["validation_acc"] <= 1.0 for r in retrained.values())
    for row in retrain["summary"].values():
        assert row["chosen_by"] == "validation accuracy after retraining"
        assert row["validation_after"] == retrained[row["point"]]["validation_acc"]
    report = (out / "results.md").read_text()
    assert "## Pareto front" in report and "## After retraining" in report
    assert "## Pareto front" in capsys.readouterr().out
    # rerunning the command resumes the study: no new trials, same front
    assert main(args[:-6]) == 0
    assert json.loads((out / "pareto.json").read_text())["pareto"] == data["pareto"]


def _model(checkpoint: Path) -> torch.nn.Module:
    from appmult_fx.app.workflow import load_float_model

    return load_float_model(checkpoint)[0]


def test_search_without_power_figures_is_refused(tmp_path, float_checkpoint, capsys):
    args = ["search", "--checkpoint", str(float_checkpoint), "--candidates", "mul8u_exact"]
    args += ["mul8u_drum3", "--trials", "2", "--out", str(tmp_path / "x")]
    assert main(args) == 2
    assert "no 'power_mw' figure" in capsys.readouterr().err


def test_search_over_an_evoapprox_catalogue(tmp_path, float_checkpoint, shared):
    """The EvoApproxLib sample (exact mul8u_1JFF and mul8u_2AC, power from their headers)
    imported as a catalogue and searched with --catalogue."""
    report = amx.import_library(
        shared / "evoapprox" / "8x8_unsigned", tmp_path / "cat", workers=1, progress=False
    )
    powers = {m.name: m.hardware["power_mw"] for m in amx.load_catalogue(report.catalogue)}
    assert powers == {"mul8u_1JFF": 0.391, "mul8u_2AC": 0.311}  # the C headers' PDK45_PWR
    out = tmp_path / "search"
    args = ["search", "--checkpoint", str(float_checkpoint), "--catalogue", str(report.catalogue)]
    assert main(args + ["--trials", "3", "--calib-batches", "1", "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "pareto.json").read_text())
    uniform = {p["label"]: p["energy"] for p in data["baselines"]}
    assert uniform == pytest.approx({"uniform:mul8u_1JFF": 1.0, "uniform:mul8u_2AC": 0.311 / 0.391})


def test_widths_picks_one_width_from_a_mixed_catalogue(tmp_path, float_checkpoint, shared, capsys):
    """The whole EvoApproxLib sample (7u, 8s, 8u, 8x4u) in one catalogue: --widths 8u searches
    the two 8x8 unsigned circuits; a width the catalogue lacks is a clear error."""
    report = amx.import_library(shared / "evoapprox", tmp_path / "cat", workers=1, progress=False)
    args = ["search", "--checkpoint", str(float_checkpoint), "--catalogue", str(report.catalogue)]
    args += ["--trials", "2", "--calib-batches", "1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "mixed")]) == 2
    assert "mix widths" in capsys.readouterr().err
    assert main([*args, "--widths", "8u", "--out", str(tmp_path / "s")]) == 0
    data = json.loads((tmp_path / "s" / "pareto.json").read_text())
    assert {p["label"] for p in data["baselines"]} == {"uniform:mul8u_1JFF", "uniform:mul8u_2AC"}
    assert main([*args, "--widths", "8x2u", "--out", str(tmp_path / "n")]) == 2
    assert "no multiplier of the catalogue has it" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["9x4", "8x1u", "8q", "x4", ""])
def test_widths_refuses_bad_text_before_anything_loads(text: str, capsys) -> None:
    """--widths is parsed with --bits' rules (widths 2..8) when the command line is read."""
    with pytest.raises(SystemExit) as info:
        main(["search", "--checkpoint", "none.pt", "--catalogue", "none.json", "--widths", text])
    assert info.value.code == 2
    assert "expected AxB with an optional u/s" in capsys.readouterr().err


def test_widths_filter_parses_widths_and_sign() -> None:
    from appmult_fx.cli.search import _matches_widths, _widths_arg

    assert _widths_arg("8x4S") == (8, 4, True) and _widths_arg(" 7 ") == (7, 7, None)
    mult = amx.multiplier("mul8x4u_exact")
    assert _matches_widths(mult, _widths_arg("8x4u")) and _matches_widths(mult, _widths_arg("8x4"))
    assert not _matches_widths(mult, _widths_arg("8x4s")) and not _matches_widths(
        mult, (8, 8, None)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "--trials: expected an integer >= 1, got 0"),
        (["--trials", "-5"], "--trials: expected an integer >= 1, got -5"),
        (["--workers", "0"], "--workers: expected an integer >= 1, got 0"),
        (["--calib-batches", "0"], "--calib-batches: expected an integer >= 1, got 0"),
        (["--population", "1"], "--population: expected an integer >= 2, got 1"),
        (["--val-fraction", "0"], "--val-fraction: expected a number > 0 and < 1, got 0"),
        (["--val-fraction", "1.5"], "--val-fraction: expected a number > 0 and < 1, got 1.5"),
        (["--retrain-epochs", "-1"], "--retrain-epochs: expected an integer >= 0, got -1"),
        (["--retrain-steps", "0"], "--retrain-steps: expected an integer >= 1, got 0"),
        (["--reference-power", "0"], "--reference-power: expected a number > 0, got 0"),
        (["--reference-power", "nan"], "--reference-power: expected a number > 0, got nan"),
        (["--power", "mul8u_2AC=abc"], "the value 'abc' is not a number"),
        (["--power", "mul8u_2AC=-1"], "a cost must be finite and >= 0"),
        (["--power", "0.1"], "expected NAME=VALUE, got '0.1'"),
    ],
)
def test_bad_arguments_are_refused_before_anything_loads(args, message, tmp_path, capsys):
    cmd = ["search", "--checkpoint", "none.pt", "--candidates", "mul8u_exact"]
    with pytest.raises(SystemExit) as info:
        main([*cmd, "--out", str(tmp_path / "out"), *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_validation_fraction_leaving_no_calibration_data_is_refused(
    tmp_path, float_checkpoint, capsys
) -> None:
    args = ["search", "--checkpoint", str(float_checkpoint), "--candidates", "mul8u_exact"]
    args += ["--power", "mul8u_exact=0.4", "--val-fraction", "0.9999", "--out", str(tmp_path)]
    assert main([*args, "--quiet"]) == 2
    assert "leaving none to calibrate on" in capsys.readouterr().err


def test_resuming_with_other_costs_calibration_or_model_is_refused(
    tmp_path, float_checkpoint, capsys
) -> None:
    """Rerunning into the same --out resumes the study only when everything its trials were
    computed from is the same; otherwise it says what differs (exit 2)."""
    other = tmp_path / "other.pt"
    train = ["train", "--model", "lenet5", "--epochs", "1", "--seed", "1", "--quiet"]
    assert main([*train, "--out", str(other)]) == 0
    out = tmp_path / "search"
    base = ["search", "--candidates", "mul8u_exact", "mul8u_drum3", "--trials", "2"]
    base += ["--calib-batches", "1", "--out", str(out), "--quiet"]
    power = ["--power", "mul8u_exact=0.4", "mul8u_drum3=0.1"]
    first = [*base, "--checkpoint", str(float_checkpoint)]
    assert main([*first, *power]) == 0
    capsys.readouterr()
    stored = json.loads((out / "pareto.json").read_text())
    changed = [
        ([*first, "--power", "mul8u_exact=0.4", "mul8u_drum3=0.2"], "mul8u_drum3 0.1 -> 0.2"),
        ([*first, *power, "--reference-power", "0.5"], "mul8u_exact: 0.4"),
        ([*first, *power, "--calib-batches", "2"], "(--calib-batches): 1 -> 2"),
        ([*base, "--checkpoint", str(other), *power], "the model's weights (state_dict)"),
    ]
    for args, message in changed:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err, err
    assert json.loads((out / "pareto.json").read_text()) == stored  # nothing overwritten
    assert main([*first, *power]) == 0
