"""``appmult-fx export`` argument checks: ``--verify N`` and an output folder that would
overwrite the checkpoint, refused (exit 2) before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from appmult_fx.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ck")
    train = ["train", "--model", "lenet5", "--epochs", "1", "--max-steps", "2", "--quiet"]
    assert main([*train, "--out", str(folder / "float.pt")]) == 0
    out = folder / "r.pt"
    args = ["retrain", "--checkpoint", str(folder / "float.pt"), "--multiplier", "mul6u_trunc2"]
    opts = ["--gradient", "ste", "--epochs", "1", "--max-steps", "1", "--calib-batches", "1"]
    assert main([*args, *opts, "--out", str(out), "--quiet"]) == 0
    return out


def test_verify_count_is_checked_and_reported_truthfully(
    retrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "neg"
    assert main(["export", str(retrained), str(out), "--verify", "-3"]) == 2
    err = capsys.readouterr().err
    assert "--verify N: the number of test inputs must be >= 0, got -3" in err
    assert "Traceback" not in err and not out.exists()
    assert main(["export", str(retrained), str(tmp_path / "all"), "--verify", "100000"]) == 0
    text = capsys.readouterr().out
    assert "verify custom (lowered at load): 360 inputs (all of the test set" in text
    assert "100000 inputs," not in text


def test_export_folder_that_would_overwrite_the_checkpoint_is_refused(
    retrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ck = tmp_path / "r.pt"
    ck.write_bytes(retrained.read_bytes())
    before = ck.read_bytes()
    assert main(["export", str(ck), str(ck)]) == 2
    assert "which would overwrite the checkpoint" in capsys.readouterr().err
    inner = tmp_path / "ex" / "manifest.json"
    inner.parent.mkdir()
    inner.write_bytes(before)
    assert main(["export", str(inner), str(tmp_path / "ex")]) == 2
    assert "which would overwrite the checkpoint" in capsys.readouterr().err
    assert ck.read_bytes() == before and inner.read_bytes() == before
