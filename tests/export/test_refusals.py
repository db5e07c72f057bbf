"""The loader refuses exports it cannot trust, with errors that say what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

import appmult_fx as amx
from appmult_fx.app.models import lenet5
from appmult_fx.export.manifest import SCHEMA_VERSION, file_sha256


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path: Path, manifest: dict) -> None:
    (path / "manifest.json").write_text(json.dumps(manifest))


def _lut_file(path: Path) -> Path:
    return path / _manifest(path)["multipliers"][0]["file"]


def test_intact_copy_loads(export_dir: Path) -> None:
    assert amx.load_exported(export_dir).manifest["layers"]


@pytest.mark.parametrize("portable", [False, True])
def test_tampered_lut_is_refused(export_dir: Path, portable: bool) -> None:
    lut = _lut_file(export_dir)
    data = bytearray(lut.read_bytes())
    data[len(data) // 2] ^= 0x01
    lut.write_bytes(bytes(data))
    with pytest.raises(amx.ExportFormatError, match=r"sha256 mismatch .*modified or corrupted"):
        amx.load_exported(export_dir, portable=portable)


def test_replaced_lut_with_matching_file_hash_is_refused(export_dir: Path, tmp_path: Path) -> None:
    """A different (valid) multiplier whose file hash was also put into the manifest."""
    lut = _lut_file(export_dir)
    amx.multiplier("mul8u_exact").save(lut)
    manifest = _manifest(export_dir)
    manifest["multipliers"][0]["sha256"] = file_sha256(lut)
    _write_manifest(export_dir, manifest)
    with pytest.raises(amx.ExportFormatError, match="does not match the manifest entry"):
        amx.load_exported(export_dir)


def test_missing_lut_is_refused(export_dir: Path) -> None:
    lut = _lut_file(export_dir)
    lut.unlink()
    with pytest.raises(amx.ExportFormatError, match="missing") as info:
        amx.load_exported(export_dir)
    assert lut.name in str(info.value)


def test_missing_manifest_and_model_are_refused(export_dir: Path) -> None:
    (export_dir / "model.onnx").unlink()
    with pytest.raises(
        amx.ExportFormatError, match="model.onnx: ONNX model named by the manifest is missing"
    ):
        amx.load_exported(export_dir)
    (export_dir / "manifest.json").unlink()
    with pytest.raises(amx.ExportFormatError, match="manifest.json: missing"):
        amx.load_exported(export_dir)


def test_newer_schema_version_is_refused(export_dir: Path) -> None:
    manifest = _manifest(export_dir)
    manifest["schema_version"] = SCHEMA_VERSION + 1
    manifest["something_new"] = {"from": "the future"}
    _write_manifest(export_dir, manifest)
    with pytest.raises(
        amx.ExportFormatError, match=rf"schema_version {SCHEMA_VERSION + 1} is newer .*upgrade"
    ):
        amx.load_exported(export_dir)


def test_manifest_violating_schema_is_refused(export_dir: Path) -> None:
    manifest = _manifest(export_dir)
    del manifest["layers"][1]["multiplier"]
    _write_manifest(export_dir, manifest)
    with pytest.raises(
        amx.ExportFormatError, match=r"invalid manifest at layers/1: 'multiplier' is a required"
    ):
        amx.load_exported(export_dir)


def test_manifest_escaping_the_directory_is_refused(export_dir: Path) -> None:
    manifest = _manifest(export_dir)
    manifest["multipliers"][0]["file"] = "../elsewhere.lut"
    _write_manifest(export_dir, manifest)
    with pytest.raises(amx.ExportFormatError, match="invalid manifest at multipliers/0/file"):
        amx.load_exported(export_dir)


def test_onnx_with_unknown_multiplier_is_refused(export_dir: Path) -> None:
    model = onnx.load(export_dir / "model.onnx")
    node = next(n for n in model.graph.node if n.domain == "appmult")
    for attr in node.attribute:
        if attr.name == "multiplier_sha256":
            attr.s = b"0" * 64
        if attr.name == "multiplier":
            attr.s = b"mul8u_mystery"
    onnx.save(model, export_dir / "model.onnx")
    with pytest.raises(amx.ExportFormatError, match=r"model.onnx: sha256 mismatch"):
        amx.load_exported(export_dir)
    manifest = _manifest(export_dir)  # an attacker who also re-hashes the file
    manifest["model"]["sha256"] = file_sha256(export_dir / "model.onnx")
    _write_manifest(export_dir, manifest)
    with pytest.raises(
        amx.ExportFormatError, match=r"unknown multiplier 'mul8u_mystery' \(sha256 0{64}\)"
    ):
        amx.load_exported(export_dir)


def test_export_of_uncalibrated_model_is_refused(tmp_path: Path) -> None:
    gm = amx.convert(lenet5(), amx.Spec().set_global("mul8u_exact"), gradient="ste").eval()
    with pytest.raises(ValueError, match=r"never calibrated.*amx.calibrate"):
        amx.export(gm, torch.randn(2, 1, 28, 28), tmp_path, progress=False)
    assert not (tmp_path / "manifest.json").exists()


def test_export_of_unconverted_model_is_refused(tmp_path: Path) -> None:
    gm = torch.fx.symbolic_trace(lenet5())
    with pytest.raises(ValueError, match="no approximate layers"):
        amx.export(gm, torch.randn(2, 1, 28, 28), tmp_path, progress=False)


def test_export_of_unsupported_layer_names_it(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3), torch.nn.ConvTranspose2d(2, 3, 3))
    gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"), gradient="ste")
    amx.calibrate(gm, [torch.randn(2, 2, 6, 6)], progress=False)
    with pytest.raises(
        ValueError, match=r"layer '1': .*conv_transpose2d.*set_module_name\('1', None\)"
    ):
        amx.export(gm.eval(), torch.randn(2, 2, 6, 6), tmp_path, progress=False)


def test_frozen_ops_refuse_a_table_or_weight_codes_of_other_widths() -> None:
    """The integer layers mask codes to the table's widths, so the frozen ops check the node's
    widths against the table and the weight codes against ``bits_b`` before computing."""
    import appmult_fx.export.torch_ops  # noqa: F401  (registers appmult_export ops)

    table = torch.arange(256 * 16, dtype=torch.int32).reshape(256, 16)  # an 8x4 table
    x, one, zero = torch.rand(2, 3), torch.tensor(0.01), torch.tensor(0.0)
    w = torch.tensor([[7.0, -8.0, 0.0], [1.0, 2.0, 3.0]])  # 4-bit signed codes: fine

    def run(w: torch.Tensor, table: torch.Tensor, bits_b: int) -> torch.Tensor:
        return torch.ops.appmult_export.lut_linear(
            x, w, one, zero, one, zero, None, table, 8, bits_b, True, "m", "0" * 64, "fc"
        )

    assert run(w, table, 4).shape == (2, 2)
    with pytest.raises(RuntimeError, match="bits_a=8, bits_b=5 need a 256x32 table"):
        run(w, table, 5)
    with pytest.raises(RuntimeError, match=r"weight codes outside \[-8, 7\]"):
        run(w + torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), table, 4)
    a_table = torch.zeros(16, 16, dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"need a 256x16 table, got \(16, 16\)"):
        torch.ops.appmult_export.lut_matmul(
            x, x.t(), one, zero, one, zero, a_table, 8, 4, True, "m", "0" * 64, "mm"
        )


@pytest.mark.parametrize("which", ["activation", "weight"])
def test_export_refuses_a_quantizer_of_other_widths_than_its_multiplier(
    tmp_path: Path, which: str
) -> None:
    """A quantizer edited after conversion (here one bit narrower) would export codes the
    multiplier's table does not index as the model computed them: refused, naming the layer."""
    from appmult_fx.ops.quantizers import ActivationQuantizer, WeightQuantizer

    gm = amx.convert(lenet5(), amx.Spec().set_global("mul8x4u_exact"), gradient="ste").eval()
    amx.calibrate(gm, [torch.randn(4, 1, 28, 28)], progress=False)
    kind = ActivationQuantizer if which == "activation" else WeightQuantizer
    quantizer = next(m for m in gm.modules() if isinstance(m, kind))
    quantizer.bits -= 1
    with pytest.raises(ValueError, match=f"its {which} quantizer is {quantizer.bits}-bit"):
        amx.export(gm, torch.randn(2, 1, 28, 28), tmp_path, progress=False)
    assert not (tmp_path / "manifest.json").exists()
