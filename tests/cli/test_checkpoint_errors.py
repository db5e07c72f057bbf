"""The attack on checkpoints through the CLI: flipped bytes, truncation, another model's weights,
``--resume`` with other arguments: each a clear message and exit code 3, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from appmult_fx.app.train import load_checkpoint, save_checkpoint
from appmult_fx.cli import EXIT_CHECKPOINT, main

TRAIN = ["train", "--model", "lenet5", "--epochs", "2", "--max-steps", "2", "--quiet"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "float.pt"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def _copy(src: Path, dst: Path, data: bytes | None = None) -> Path:
    dst.write_bytes(src.read_bytes() if data is None else data)
    return dst


def test_flipped_and_truncated_checkpoints_exit_3(trained: Path, tmp_path: Path, capsys) -> None:
    raw = bytearray(trained.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    flipped = _copy(trained, tmp_path / "flipped.pt", bytes(raw))
    assert main(["eval", str(flipped)]) == EXIT_CHECKPOINT == 3
    err = capsys.readouterr().err
    assert "content hash mismatch" in err and "Traceback" not in err
    truncated = _copy(trained, tmp_path / "cut.pt", trained.read_bytes()[: len(raw) // 3])
    assert main(["eval", str(truncated)]) == 3
    assert "truncated, corrupted or was modified" in capsys.readouterr().err
    assert main(["eval", str(trained)]) == 0


def test_wrong_model_checkpoint_exits_3(trained: Path, tmp_path: Path, capsys) -> None:
    state = load_checkpoint(trained)
    state["model_args"] = {**state["model_args"], "name": "resnet8"}  # lenet5 weights
    other = tmp_path / "other.pt"
    save_checkpoint(other, state)
    assert main(["eval", str(other)]) == 3
    err = capsys.readouterr().err
    assert "does not fit this model" in err and "another model" in err


def test_resume_with_changed_arguments_exits_3_unless_overridden(
    trained: Path, tmp_path: Path, capsys
) -> None:
    ck = _copy(trained, tmp_path / "run.pt")
    state = load_checkpoint(ck)
    state["epoch"] = 1  # as if interrupted after the first of two epochs
    state["history"] = state["history"][:1]
    save_checkpoint(ck, state)
    assert main([*TRAIN, "--out", str(ck), "--resume", "--seed", "5"]) == 3
    assert "seed: 0 -> 5" in capsys.readouterr().err
    assert main([*TRAIN, "--out", str(ck), "--resume", "--lr", "0.01"]) == 3
    assert "lr: 0.001 -> 0.01" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="changed arguments"):
        rc = main([*TRAIN, "--out", str(ck), "--resume", "--seed", "5", "--resume-override"])
    assert rc == 0
    assert load_checkpoint(ck)["epoch"] == 2


def test_retrained_checkpoint_with_a_zeroed_lut_exits_3(
    trained: Path, tmp_path: Path, capsys
) -> None:
    """The table is zeroed and the file re-hashed (a consistent-looking checkpoint): the LUT
    buffer check still refuses it instead of evaluating a model that multiplies by zero."""
    out = tmp_path / "r.pt"
    args = ["retrain", "--checkpoint", str(trained), "--multiplier", "mul6u_exact"]
    opts = ["--gradient", "ste", "--epochs", "1", "--max-steps", "1", "--calib-batches", "1"]
    assert main([*args, *opts, "--out", str(out), "--quiet"]) == 0
    state = load_checkpoint(out)
    key = next(k for k in state["model"] if k.startswith("appmult_luts.") and "table" in k)
    state["model"][key] = torch.zeros_like(state["model"][key])
    save_checkpoint(out, state)
    capsys.readouterr()
    assert main(["eval", str(out)]) == 3
    err = capsys.readouterr().err
    assert "does not match multiplier 'mul6u_exact'" in err and "Traceback" not in err


def test_spec_file_edited_after_retraining_is_refused(
    trained: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """The checkpoint records the spec's content: after the file is edited, eval / export /
    retrain --resume refuse (exit 3, naming the change) instead of rebuilding the model with
    another spec; a deleted file is rebuilt from the recorded copy."""
    spec = tmp_path / "spec.toml"
    original = 'global = "mul6u_trunc2"\n'
    spec.write_text(original)
    out = tmp_path / "r.pt"
    args = ["retrain", "--checkpoint", str(trained), "--spec", str(spec), "--out", str(out)]
    args += ["--gradient", "ste", "--epochs", "2", "--max-steps", "1", "--calib-batches", "1"]
    assert main([*args, "--quiet"]) == 0
    source = load_checkpoint(out)["spec_source"]
    assert source["file"] == str(spec.resolve()) and source["content"] == original
    assert len(source["sha256"]) == 64
    assert main(["eval", str(out)]) == 0
    capsys.readouterr()
    spec.write_text('global = { multiplier = "mul6u_trunc2", per_channel = true }\n')
    for cmd in (["eval", str(out)], ["export", str(out), str(tmp_path / "ex")]):
        assert main(cmd) == 3, cmd
        err = capsys.readouterr().err
        assert f"spec file {spec.resolve()} changed since the checkpoint was written" in err, cmd
        assert "Traceback" not in err
    assert not (tmp_path / "ex").exists()
    state = load_checkpoint(out)
    state["epoch"], state["history"] = 1, state["history"][:1]  # interrupted after epoch 1
    save_checkpoint(out, state)
    assert main([*args, "--resume", "--quiet"]) == 3
    assert f"spec file {spec.resolve()}: content changed since the checkpoint" in (
        capsys.readouterr().err
    )
    spec.unlink()  # gone: rebuilt from the recorded content
    with pytest.warns(UserWarning, match="rebuilding from the copy recorded"):
        assert main(["eval", str(out)]) == 0
    spec.write_text(original)
    assert main([*args, "--resume", "--quiet"]) == 0
    assert load_checkpoint(out)["epoch"] == 2


def test_checkpoint_without_recorded_spec_content_still_loads_with_a_warning(
    trained: Path, tmp_path: Path, capsys
) -> None:
    """Checkpoints written before the spec's content was recorded hold only its path: they
    load (eval) and resume as before, with a warning that the file cannot be checked."""
    spec = tmp_path / "spec.json"
    spec.write_text('{"global": "mul6u_trunc2"}')
    out = tmp_path / "r.pt"
    args = ["retrain", "--checkpoint", str(trained), "--spec", str(spec), "--out", str(out)]
    args += ["--gradient", "ste", "--epochs", "2", "--max-steps", "1", "--calib-batches", "1"]
    assert main([*args, "--quiet"]) == 0
    state = load_checkpoint(out)
    state["spec_source"] = {"file": state["spec_source"]["file"]}  # the old record
    state["epoch"], state["history"] = 1, state["history"][:1]
    save_checkpoint(out, state)
    with pytest.warns(UserWarning, match="records only the path of its spec file"):
        assert main(["eval", str(out)]) == 0
    with pytest.warns(UserWarning, match="cannot check whether the file changed"):
        assert main([*args, "--resume", "--quiet"]) == 0
    assert load_checkpoint(out)["epoch"] == 2
