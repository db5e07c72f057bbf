"""``appmult-fx train / retrain / eval / compare / demo`` end to end on the digits data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import appmult_fx.app.workflow as workflow
from appmult_fx.app.train import load_checkpoint
from appmult_fx.cli import main
from tests.test_train import aggressive_multiplier


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: fast and steady on small shared machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def float_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("float") / "float.pt"
    rc = main(
        [
            "train",
            "--model",
            "lenet5",
            "--epochs",
            "2",
            "--lr",
            "1e-2",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0 and out.is_file()
    return out


@pytest.fixture(scope="module")
def aggressive_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return aggressive_multiplier().save(tmp_path_factory.mktemp("mult") / "aggressive.amx")


def _run_stem(path: Path) -> str:
    """``mul-lut-seed0`` of a run file ``mul-lut-seed0-<key hash>.json``."""
    stem, _, digest = path.stem.rpartition("-")
    assert len(digest) == 12, path.name
    return stem


def _history(report: dict) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in report["history"]]


def test_retrain_recovers_is_reproducible_and_eval_matches(
    tmp_path: Path, float_checkpoint: Path, aggressive_file: Path, capsys: pytest.CaptureFixture
) -> None:
    common = ["--epochs", "1", "--seed", "3", "--calib-batches", "8", "--quiet"]
    rc = main(
        [
            "retrain",
            "--checkpoint",
            str(float_checkpoint),
            "--multiplier",
            str(aggressive_file),
            "--out",
            str(tmp_path / "a.pt"),
            *common,
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["float_acc"] > 0.6
    assert report["initial_acc"] < report["float_acc"] - 0.2
    assert report["final_acc"] > report["initial_acc"] + 0.2
    assert report["gradient"] == "lut" and report["seed"] == 3
    (mult,) = report["multipliers"]
    assert mult["sha256"] == aggressive_multiplier().sha256 and mult["layers"] == 5
    assert len(report["history"]) == 1 and report["wall_time_s"] > 0

    # The same run from a spec file (path relative to the file) is the same run, bit for bit.
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"global": str(aggressive_file)}))
    rc = main(
        [
            "retrain",
            "--checkpoint",
            str(float_checkpoint),
            "--spec",
            str(spec),
            "--out",
            str(tmp_path / "b.pt"),
            "--report",
            str(tmp_path / "b-report.json"),
            *common,
        ]
    )
    assert rc == 0
    again = json.loads((tmp_path / "b-report.json").read_text())
    assert _history(again) == _history(report) and again["initial_acc"] == report["initial_acc"]

    # eval rebuilds the converted model from the checkpoint and gets the reported accuracy.
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "a.pt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "retrain" and result["acc"] == report["final_acc"]


def test_ctrl_c_exits_130_with_a_checkpoint_and_resume_finishes(
    tmp_path: Path, float_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fit = workflow.fit

    def interrupt(epoch: int, step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "fit", lambda *a, **k: real_fit(*a, **k, after_step=interrupt))
    args = [
        "retrain",
        "--checkpoint",
        str(float_checkpoint),
        "--multiplier",
        "mul6u_exact",
        "--gradient",
        "ste",
        "--epochs",
        "1",
        "--max-steps",
        "6",
        "--calib-batches",
        "2",
        "--out",
        str(tmp_path / "r.pt"),
        "--quiet",
    ]
    assert main(args) == 130
    state = load_checkpoint(tmp_path / "r.pt")
    assert (state["epoch"], state["step"]) == (0, 3)
    monkeypatch.setattr(workflow, "fit", real_fit)
    assert main([*args, "--resume"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert [h["epoch"] for h in report["history"]] == [1]
    assert load_checkpoint(tmp_path / "r.pt")["epoch"] == 1


def test_compare_writes_table_plot_and_reuses_finished_runs(
    tmp_path: Path, float_checkpoint: Path, aggressive_file: Path
) -> None:
    out = tmp_path / "cmp"
    args = [
        "compare",
        "--checkpoint",
        str(float_checkpoint),
        "--multipliers",
        str(aggressive_file),
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--calib-batches",
        "2",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    table = (out / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| mul7u_trunc7_bias300"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "7" and all(c != "-" for c in cells[2:])  # float, exact, initial, STE, LUT
    assert f"Command: `appmult-fx compare --checkpoint {float_checkpoint}" in table
    assert "--max-steps 3 --calib-batches 2" in table
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = sorted(_run_stem(p) for p in (out / "runs").iterdir())
    assert runs == [
        "mul7u_exact-ste-seed0",
        "mul7u_trunc7_bias300-lut-seed0",
        "mul7u_trunc7_bias300-ste-seed0",
    ]
    stamp = {p: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert main(args) == 0  # a second call reuses the finished runs
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamp
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"][0]["multiplier"] == "mul7u_trunc7_bias300"


def test_compare_with_a_rectangular_multiplier_uses_its_exact_twin(
    tmp_path: Path, float_checkpoint: Path
) -> None:
    """An 8x4 multiplier's baseline is the exact 8x4 one; the table says 8x4."""
    out = tmp_path / "cmp"
    args = ["compare", "--checkpoint", str(float_checkpoint), "--multipliers", "mul8x4u_trunc3"]
    args += ["--seeds", "0", "--epochs", "1", "--max-steps", "2", "--calib-batches", "2"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    row = next(
        line for line in (out / "results.md").read_text().splitlines() if "mul8x4u_trunc3" in line
    )
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "8x4" and cells[3] != "-"  # the exact-quantized column is filled
    runs = sorted(_run_stem(p) for p in (out / "runs").iterdir())
    assert runs == [
        "mul8x4u_exact-ste-seed0",
        "mul8x4u_trunc3-lut-seed0",
        "mul8x4u_trunc3-ste-seed0",
    ]
    (lut_run,) = (out / "runs").glob("mul8x4u_trunc3-lut-seed0-*.json")
    report = json.loads(lut_run.read_text())
    assert report["multipliers"][0]["bits"] == "8x4"


def test_compare_refuses_an_fp_multiplier_before_any_run(
    tmp_path: Path, float_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "--checkpoint", str(float_checkpoint), "--out", str(out)]
    args += ["--multipliers", "mul7u_trunc7", "fp_mbm7", "--seeds", "0", "--max-steps", "2"]
    assert main([*args, "--quiet"]) != 0
    assert "fp_mbm7: compare runs integer multipliers" in capsys.readouterr().err
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())


def test_demo_shortened_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo.json"
    rc = main(
        [
            "demo",
            "--float-epochs",
            "1",
            "--epochs",
            "1",
            "--max-steps",
            "3",
            "--no-export",  # the export has its own tests; this keeps the test short
            "--json",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    for key in ("float_acc", "initial_acc", "retrained_acc"):
        assert 0.0 <= result[key] <= 1.0
    assert result["multiplier"] and result["dataset"] == "digits"
    text = capsys.readouterr().out
    assert "after conversion (initial)" in text and "after retraining" in text


def test_bad_arguments_are_clear_errors(
    tmp_path: Path, float_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "retrain",
                "--checkpoint",
                str(float_checkpoint),
                "--spec",
                "a.json",
                "--multiplier",
                "mul8u_exact",
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )
    rc = main(
        [
            "retrain",
            "--checkpoint",
            str(float_checkpoint),
            "--multiplier",
            "no_such_mult",
            "--out",
            str(tmp_path / "x.pt"),
            "--quiet",
        ]
    )
    assert rc == 2 and "no_such_mult" in capsys.readouterr().err
    rc = main(["eval", str(tmp_path / "absent.pt")])
    assert rc == 2 and "absent.pt" in capsys.readouterr().err
    train = ["train", "--model", "lenet5", "--out", str(tmp_path / "f.pt"), "--quiet"]
    for bad, says in (
        (["--epochs", "0"], "epochs must be an integer >= 1, got 0"),
        (["--max-steps", "0"], "max_steps_per_epoch must be an integer >= 1, got 0"),
        (["--lr-gamma", "0"], "lr_gamma must be a finite number > 0"),
        (["--lr", "nan"], "lr must be a finite number > 0"),
        (["--milestones", "1.5", "-2"], "each in [0, 1]; got [1.5, -2.0]"),
    ):
        assert main(train + bad) == 2, bad
        assert says in capsys.readouterr().err, bad
    assert not (tmp_path / "f.pt").exists()
    calib = ["--calib-batches", "0", "--out", str(tmp_path / "y.pt"), "--quiet"]
    rc = main(
        ["retrain", "--checkpoint", str(float_checkpoint), "--multiplier", "mul8u_exact"] + calib
    )
    assert rc == 2 and "calibration batches must be >= 1, got 0" in capsys.readouterr().err


def test_fp_multiplier_retrains_through_the_generic_workflow(
    tmp_path: Path, float_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "fp.pt"
    args = ["retrain", "--checkpoint", str(float_checkpoint), "--multiplier", "fp_mbm5"]
    assert main(args + ["--epochs", "1", "--max-steps", "2", "--out", str(out), "--quiet"]) == 0
    assert "(approximate FP backward)" in capsys.readouterr().out
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["training_modes"] == ["approximate FP backward"]
    assert [m["name"] for m in report["multipliers"]] == ["fp_mbm5"]


def _compare_args(checkpoint: Path, out: Path, *multipliers: str, epochs: int = 1) -> list[str]:
    return [
        "compare", "--checkpoint", str(checkpoint), "--multipliers", *multipliers,
        "--seeds", "0", "--epochs", str(epochs), "--max-steps", "2", "--calib-batches", "1",
        "--no-exact", "--out", str(out), "--quiet",
    ]  # fmt: skip


def _rows(out: Path) -> list[list[str]]:
    lines = (out / "results.md").read_text().splitlines()
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in lines
        if line.startswith("| mymult")
    ]


def test_compare_keys_runs_by_table_and_arguments(tmp_path: Path, float_checkpoint: Path) -> None:
    """Two multipliers of one name but different tables are two rows with their own runs (not
    one row, the second never trained), and a rerun with other arguments into the same folder
    retrains instead of reusing runs of the old arguments under the new header."""
    from appmult_fx.luts.registry import multiplier

    a, b = multiplier("mul6u_trunc2").renamed("mymult"), multiplier("mul6u_drum3").renamed("mymult")
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    fa, fb = a.save(tmp_path / "d1" / "m.lut"), b.save(tmp_path / "d2" / "m.lut")
    out = tmp_path / "cmp"
    assert main(_compare_args(float_checkpoint, out, str(fa), str(fb), str(fa))) == 0
    labels = sorted(row[0] for row in _rows(out))
    assert labels == sorted([f"mymult [{a.sha256[:8]}]", f"mymult [{b.sha256[:8]}]"])
    reports = [json.loads(p.read_text()) for p in (out / "runs").iterdir()]
    assert len(reports) == 4  # 2 tables x {ste, lut}; the repeated file runs once
    trained = {(r["multipliers"][0]["sha256"], r["gradient"]) for r in reports}
    assert trained == {(m.sha256, g) for m in (a, b) for g in ("ste", "lut")}
    # the same call again reuses every run; other epochs retrain, keeping the old runs
    stamp = {p: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert main(_compare_args(float_checkpoint, out, str(fa), str(fb))) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamp
    assert main(_compare_args(float_checkpoint, out, str(fa), epochs=2)) == 0
    assert "2 retraining epochs" in (out / "results.md").read_text()
    new = [json.loads(p.read_text()) for p in (out / "runs").iterdir() if p not in stamp]
    assert sorted(r["gradient"] for r in new) == ["lut", "ste"]
    for r in new:
        assert r["epochs"] == 2 and len(r["history"]) == 2 and r["run_key"]["epochs"] == 2
        assert r["multipliers"][0]["sha256"] == a.sha256 and r["label"] == "mymult"


def test_outputs_that_would_overwrite_an_input_are_refused(
    tmp_path: Path, float_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    """retrain --out / --report (given or defaulted) and compare --out may not be (or write
    over) the float checkpoint or a multiplier file: exit 2, the input untouched."""
    ck = tmp_path / "f.pt"
    ck.write_bytes(float_checkpoint.read_bytes())
    before = ck.read_bytes()
    retrain = ["retrain", "--checkpoint", str(ck), "--multiplier", "mul8u_trunc4", "--quiet"]
    retrain += ["--epochs", "1", "--max-steps", "1", "--calib-batches", "1"]
    (tmp_path / "sub").mkdir()
    for extra, says in (
        (["--out", str(ck)], f"--out {ck} is the same file as --checkpoint {ck}"),
        (["--out", str(tmp_path / "sub" / ".." / "f.pt")], "is the same file as --checkpoint"),
        (["--out", str(tmp_path / "r.pt"), "--report", str(ck)], "--report"),
        (["--out", str(tmp_path / "r.json")], "the report (--out with suffix .json)"),
    ):
        assert main(retrain + extra) == 2, extra
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, extra
        assert ck.read_bytes() == before, extra
    link = tmp_path / "link.pt"
    link.symlink_to(ck)
    assert main([*retrain[:2], str(link), *retrain[3:], "--out", str(ck)]) == 2
    assert ck.read_bytes() == before and not (tmp_path / "r.pt").exists()
    from appmult_fx.luts.registry import multiplier

    lut = multiplier("mul6u_trunc2").save(tmp_path / "m.lut")
    lut_bytes = lut.read_bytes()
    args = ["retrain", "--checkpoint", str(ck), "--multiplier", str(lut), "--out", str(lut)]
    assert main(args) == 2 and lut.read_bytes() == lut_bytes
    assert f"--out {lut} is the same file as --multiplier {lut}" in capsys.readouterr().err
    # compare: the folder is the checkpoint, or writes its results.md over it
    for out, victim in ((ck, ck), (tmp_path, tmp_path / "results.md")):
        if victim != ck:
            victim.write_bytes(before)
        assert main(_compare_args(victim, out, "mul6u_trunc2")) == 2
        assert "would overwrite --checkpoint" in capsys.readouterr().err
        assert victim.read_bytes() == before
