"""``appmult-fx export``: a retrained checkpoint to an export directory, verified in onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import appmult_fx as amx
from appmult_fx.app.train import TrainConfig
from appmult_fx.app.workflow import retrain, train_float
from appmult_fx.cli import main


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet-5 on 8x8 digits, trained and retrained for a couple of steps."""
    root = tmp_path_factory.mktemp("ckpt")
    tiny = dict(epochs=1, batch_size=32, max_steps_per_epoch=2, quiet=True, eval_batch_size=512)
    train_float("lenet5", "digits", TrainConfig(checkpoint=str(root / "float.pt"), **tiny))
    retrain(
        root / "float.pt",
        {"multiplier": "mul8u_trunc4"},
        TrainConfig(checkpoint=str(root / "rt.pt"), **tiny),
        gradient="ste",
        calib_batches=2,
    )
    return root / "rt.pt"


def test_cli_export_writes_and_verifies(
    retrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert main(["export", str(retrained), str(out), "--portable", "--verify", "8"]) == 0
    text = capsys.readouterr().out
    assert "5 approximate layers, 1 multiplier(s)" in text
    assert text.count("argmax identical") == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["portable_file"] == "model_portable.onnx"
    assert [m["name"] for m in manifest["multipliers"]] == ["mul8u_trunc4"]
    assert amx.load_exported(out).manifest == manifest


def test_cli_export_of_missing_checkpoint_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["export", str(tmp_path / "nope.pt"), str(tmp_path / "out")]) == 2
    assert "nope.pt" in capsys.readouterr().err
