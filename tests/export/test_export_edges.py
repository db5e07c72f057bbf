"""Export corners: a folder holding an earlier export, inputs outside the batch, an opset
torch.onnx cannot write, and inputs the exported graph cannot represent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import appmult_fx as amx

from .conftest import converted

SPEC = amx.Spec().set_global("mul8u_trunc4")


class _Masked(nn.Module):
    """A batched input and a [T, T] mask that is no batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(x).transpose(1, 2) @ mask


def test_only_inputs_batched_like_the_first_get_a_dynamic_batch(tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    x, mask = torch.randn(3, 5, 8), torch.randn(5, 5)
    gm = amx.convert(_Masked().eval(), SPEC, example_inputs=(x, mask))
    amx.calibrate(gm, [(x, mask)], progress=False)
    amx.export(gm.eval(), (x, mask), tmp_path, progress=False)
    loaded = amx.load_exported(tmp_path)
    shapes = [i["shape"] for i in loaded.manifest["model"]["inputs"]]
    assert shapes == [["batch", 5, 8], [5, 5]]
    x7 = torch.randn(7, 5, 8)
    with torch.no_grad():
        assert np.array_equal(loaded.run(x7, mask)[0], gm(x7, mask).numpy())


def test_an_earlier_export_in_the_folder_leaves_no_stale_files(tmp_path) -> None:  # noqa: ANN001
    first = converted(nn.Sequential(nn.Linear(4, 4)), SPEC, (2, 4), seed=1)
    amx.export(first, torch.randn(2, 4), tmp_path, portable=True, progress=False)
    old_luts = sorted(p.name for p in (tmp_path / "luts").iterdir())
    spec = amx.Spec().set_global("mul8u_trunc2")
    second = converted(nn.Sequential(nn.Linear(4, 4)), spec, (2, 4), seed=2)
    with pytest.warns(UserWarning, match="left in .* by an earlier export"):
        amx.export(second, torch.randn(2, 4), tmp_path, progress=False)
    assert not (tmp_path / "model_portable.onnx").exists()
    new_luts = sorted(p.name for p in (tmp_path / "luts").iterdir())
    assert len(new_luts) == 1 and new_luts[0] not in old_luts
    amx.load_exported(tmp_path)  # every file it names is there and verifies


def test_non_finite_inputs_are_refused_by_the_loader(tmp_path) -> None:  # noqa: ANN001
    gm = converted(nn.Sequential(nn.Linear(4, 2)), SPEC, (2, 4), seed=3)
    amx.export(gm, torch.randn(2, 4), tmp_path, progress=False)
    loaded = amx.load_exported(tmp_path)
    for bad in (float("nan"), float("inf")):
        x = torch.randn(2, 4)
        x[1, 2] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            loaded.run(x)
    assert loaded.run(torch.randn(2, 4))[0].shape == (2, 2)


class _Pooled(nn.Module):
    """A mean over axes (2, 3): torch.onnx writes it at opset 18 only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def test_an_opset_torch_onnx_cannot_write_is_refused(tmp_path) -> None:  # noqa: ANN001
    """torch 2.14's onnx version converter cannot take this mean to opset 17 and leaves the
    model at 18; the export says so instead of writing opset 18 as if it were 17."""
    gm = converted(_Pooled(), SPEC, (2, 1, 6, 6), seed=4)
    try:
        amx.export(gm, torch.randn(2, 1, 6, 6), tmp_path / "a", opset=17, progress=False)
    except ValueError as exc:
        assert "could not write this model at opset 17 (it wrote opset 18" in str(exc)
    else:  # a torch.onnx that manages the conversion: then the file is at opset 17, as asked
        assert amx.load_exported(tmp_path / "a").manifest["model"]["opset"] == 17
    assert not (tmp_path / "a" / "manifest.json").exists() or amx.load_exported(tmp_path / "a")


def test_the_opset_written_is_checked_against_the_one_asked(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from appmult_fx.export import onnx_export

    gm = converted(nn.Sequential(nn.Linear(4, 2)), SPEC, (2, 4), seed=5)
    monkeypatch.setattr(onnx_export, "opset_of", lambda model: 99)
    with pytest.raises(ValueError, match="at opset 18 .it wrote opset 99"):
        amx.export(gm, torch.randn(2, 4), tmp_path, progress=False)
    assert not (tmp_path / "manifest.json").exists()


def test_fp_layers_are_refused_before_anything_is_written(tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(6)
    gm = amx.convert(nn.Sequential(nn.Linear(4, 2)), amx.Spec().set_global("fp_mbm7")).eval()
    with pytest.raises(ValueError, match="export supports integer multipliers"):
        amx.export(gm, torch.randn(2, 4), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_foreign_manifest_cannot_make_export_remove_other_files(tmp_path) -> None:  # noqa: ANN001
    """Only model files and LUT files of an earlier export are removed, never this export's
    own files or anything else an old manifest names."""
    import json

    (tmp_path / "userfile.txt").write_text("keep me")
    (tmp_path / "luts").mkdir()
    old = {
        "model": {"file": "./model.onnx", "portable_file": "userfile.txt"},
        "multipliers": [{"file": "luts/../manifest.json"}, {"file": "luts"}, {"file": "../x"}],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    gm = converted(nn.Sequential(nn.Linear(4, 2)), SPEC, (2, 4), seed=7)
    amx.export(gm, torch.randn(2, 4), tmp_path, progress=False)
    assert (tmp_path / "userfile.txt").read_text() == "keep me"
    amx.load_exported(tmp_path)  # model.onnx, manifest.json and the LUT are all there


def test_an_opset_onnxscript_refuses_gets_the_same_message(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise ValueError("Target opset version 17 is not supported")

    gm = converted(nn.Sequential(nn.Linear(4, 2)), SPEC, (2, 4), seed=8)
    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(ValueError, match="could not write this model at opset 17 .Target"):
        amx.export(gm, torch.randn(2, 4), tmp_path, opset=17, progress=False)
    with pytest.raises(ValueError, match="^Target opset version 17"):  # opset 18: as raised
        amx.export(gm, torch.randn(2, 4), tmp_path, progress=False)
