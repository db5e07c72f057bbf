"""The attack on exports: an edited model.onnx (bits, a scale initializer, biases), a manifest
naming an unlisted multiplier, non-finite parameters, a zeroed LUT table in a state dict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from appmult_fx.passes.context import LUT_MODULE, LutIntegrityError
from onnx import numpy_helper

import appmult_fx as amx
from appmult_fx.app.models import lenet5
from appmult_fx.export.manifest import file_sha256
from tests.export.test_refusals import _manifest, _write_manifest


def _custom_node(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.domain == "appmult")


def _set_int_attr(node: onnx.NodeProto, name: str, value: int) -> None:
    next(a for a in node.attribute if a.name == name).i = value


def _replace_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    init = next(t for t in model.graph.initializer if t.name == name)
    init.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(init).dtype), name))


def _edit_bits(model: onnx.ModelProto) -> None:
    _set_int_attr(_custom_node(model), "bits_a", 7)  # the export uses 8-bit mul8u_trunc4


def _edit_bits_b(model: onnx.ModelProto) -> None:
    _set_int_attr(_custom_node(model), "bits_b", 4)


def _edit_scale(model: onnx.ModelProto) -> None:
    name = _custom_node(model).input[2]  # x_scale
    value = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))
    _replace_initializer(model, name, value * 2)


def _edit_bias(model: onnx.ModelProto) -> None:
    name = _custom_node(model).input[6]  # B
    value = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))
    _replace_initializer(model, name, np.full_like(value, 100.0))


def _save_edited(export_dir: Path, edit) -> None:
    model = onnx.load(export_dir / "model.onnx")
    edit(model)
    onnx.save(model, export_dir / "model.onnx")


@pytest.mark.parametrize("edit", [_edit_bits, _edit_bits_b, _edit_scale, _edit_bias])
def test_edited_onnx_model_is_refused(export_dir: Path, edit) -> None:
    _save_edited(export_dir, edit)
    with pytest.raises(amx.ExportFormatError, match=r"model.onnx: sha256 mismatch.*modified"):
        amx.load_exported(export_dir)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_edit_bits, "has bits_a=7, the manifest says 8"),
        (_edit_bits_b, "has bits_b=4, the manifest says 8"),
        (_edit_scale, "activation scale"),
    ],
)
def test_edited_node_is_refused_even_with_a_rehashed_manifest(
    export_dir: Path, edit, message: str
) -> None:
    _save_edited(export_dir, edit)
    manifest = _manifest(export_dir)
    manifest["model"]["sha256"] = file_sha256(export_dir / "model.onnx")
    _write_manifest(export_dir, manifest)
    with pytest.raises(amx.ExportFormatError, match=message):
        amx.load_exported(export_dir)


def test_manifest_naming_an_unlisted_multiplier_is_refused(export_dir: Path) -> None:
    manifest = _manifest(export_dir)
    manifest["layers"][0]["multiplier"] = "mul8u_ghost"
    manifest["layers"][0]["multiplier_sha256"] = "f" * 64
    _write_manifest(export_dir, manifest)
    with pytest.raises(amx.ExportFormatError, match="mul8u_ghost.*does not list"):
        amx.load_exported(export_dir)


@pytest.mark.parametrize("version", [1, 2])
def test_older_exports_are_refused(export_dir: Path, version: int) -> None:
    """Version 1 has no model hash, version 2 one ``bits`` per layer: both must be re-exported."""
    manifest = _manifest(export_dir)
    manifest["schema_version"] = version
    _write_manifest(export_dir, manifest)
    with pytest.raises(
        amx.ExportFormatError, match=f"schema_version {version} predates.*re-export"
    ):
        amx.load_exported(export_dir)


def test_manifest_with_nan_is_not_json_and_refused(export_dir: Path) -> None:
    text = (export_dir / "manifest.json").read_text()
    manifest = json.loads(text)
    scale = manifest["layers"][0]["activation"]["scale"]
    (export_dir / "manifest.json").write_text(text.replace(json.dumps(scale), "NaN", 1))
    with pytest.raises(amx.ExportFormatError, match="manifest.json: not valid JSON"):
        amx.load_exported(export_dir)


def _calibrated() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    gm = amx.convert(lenet5(), amx.Spec().set_global("mul8u_trunc4"), gradient="ste")
    amx.calibrate(gm, [torch.randn(2, 1, 28, 28)], progress=False)
    return gm.eval()


@pytest.mark.parametrize("what", ["observer", "bias", "weight"])
def test_export_refuses_non_finite_parameters(tmp_path: Path, what: str) -> None:
    gm = _calibrated()
    with torch.no_grad():
        if what == "observer":
            amx.quantizers(gm)[1].max_val.fill_(math.nan)  # e.g. a poisoned checkpoint
        else:
            params = [p for n, p in gm.named_parameters() if n.endswith(what)]
            params[0].view(-1)[0] = math.inf
    with pytest.raises(ValueError, match="not finite.*refusing to export"):
        amx.export(gm, torch.randn(2, 1, 28, 28), tmp_path, progress=False)
    assert not (tmp_path / "manifest.json").exists()


def test_zeroed_lut_in_a_state_dict_is_refused() -> None:
    gm = _calibrated()
    state = gm.state_dict()
    key = next(k for k in state if k.startswith(LUT_MODULE) and k.endswith("_table"))
    state[key] = torch.zeros_like(state[key])
    with pytest.raises(LutIntegrityError, match="does not match multiplier 'mul8u_trunc4'"):
        _calibrated().load_state_dict(state)
    _calibrated().load_state_dict(gm.state_dict())  # the genuine tables load


def test_export_refuses_a_lut_buffer_edited_in_place(tmp_path: Path) -> None:
    gm = _calibrated()
    table = next(b for n, b in gm.named_buffers() if n.startswith(LUT_MODULE))
    table.zero_()
    with pytest.raises(LutIntegrityError, match="export: LUT buffer .* does not match"):
        amx.export(gm, torch.randn(2, 1, 28, 28), tmp_path, progress=False)


@pytest.mark.parametrize(("key", "value"), [("bits_a", 7), ("bits_b", 4), ("signed", True)])
def test_layer_widths_must_match_their_multiplier_entry(export_dir: Path, key: str, value) -> None:
    """Refused before any model file is read: the portable path checks no custom node."""
    manifest = _manifest(export_dir)
    manifest["layers"][0][key] = value
    _write_manifest(export_dir, manifest)
    for portable in (False, True):
        with pytest.raises(amx.ExportFormatError, match=f"says {key}=.*but its multiplier"):
            amx.load_exported(export_dir, portable=portable)
