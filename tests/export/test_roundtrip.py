"""Exported LeNet-5 / ResNet-20 in onnxruntime (custom via the loader, and portable) match
the PyTorch GraphModule; the written files are well-formed."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from appmult_fx.luts.indexing import operand_range

import appmult_fx as amx
from appmult_fx.cli.export import compare_outputs
from appmult_fx.export.manifest import schema

TOLERANCE = 1e-5  # of the logits' range


@pytest.fixture(params=["lenet_export", "resnet_export", "attention_export", "rectangular_export"])
def exported(request: pytest.FixtureRequest):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("portable", [False, True], ids=["custom", "portable"])
def test_outputs_match_pytorch(exported, portable: bool) -> None:
    model = amx.load_exported(exported.path, portable=portable)
    for x, expected in zip(exported.inputs, exported.references, strict=True):
        reference = expected.numpy()
        out = model(x)
        assert isinstance(out, torch.Tensor) and out.shape == reference.shape
        result = compare_outputs(reference, out.numpy())
        assert result["argmax_equal"]
        assert result["max_rel_diff"] <= TOLERANCE


def test_portable_model_runs_in_stock_onnxruntime(exported) -> None:
    """No custom-op library, no loader: plain InferenceSession on the file, another batch size."""
    session = ort.InferenceSession(
        str(exported.path / "model_portable.onnx"), providers=["CPUExecutionProvider"]
    )
    x = torch.cat(exported.inputs)[:5]  # dynamic batch: not the export's batch size
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    reference = torch.cat(exported.references)[:5].numpy()  # eval mode: rows are independent
    assert out.shape[0] == 5
    assert compare_outputs(reference, out)["max_rel_diff"] <= TOLERANCE


def test_files_pass_checker_and_schema(exported) -> None:
    import jsonschema

    custom = onnx.load(exported.path / "model.onnx")
    onnx.checker.check_model(custom)
    onnx.checker.check_model(onnx.load(exported.path / "model_portable.onnx"), full_check=True)
    manifest = json.loads((exported.path / "manifest.json").read_text())
    jsonschema.validate(manifest, schema())
    assert manifest["schema_version"] == 3 and manifest["appmult_fx_version"] == amx.__version__
    assert {o.domain: o.version for o in custom.opset_import}["appmult"] == 2
    assert manifest["model"]["opset"] >= 17
    assert manifest["model"]["inputs"][0]["shape"][0] == "batch"


def test_custom_nodes_carry_integer_weights_and_multiplier(exported) -> None:
    model = onnx.load(exported.path / "model.onnx")
    manifest = json.loads((exported.path / "manifest.json").read_text())
    inits = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node if n.domain == "appmult"}
    approx = [r for r in amx.layers(exported.gm) if r.approximate]
    assert (
        sorted(nodes)
        == sorted(r.name for r in approx)
        == sorted(e["node"] for e in manifest["layers"])
    )
    mults = {m["table_sha256"]: m for m in manifest["multipliers"]}
    for record in approx:
        node = nodes[record.name]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        op = {"conv2d": "LutConv", "linear": "LutGemm", "matmul": "LutMatMul"}[record.op]
        assert node.op_type == op
        assert attrs["multiplier"].decode() == record.multiplier.name
        assert attrs["multiplier_sha256"].decode() == record.multiplier.sha256
        widths = (attrs["bits_a"], attrs["bits_b"])
        assert (widths, bool(attrs["signed"])) == ((record.bits_a, record.bits_b), record.signed)
        entry = next(e for e in manifest["layers"] if e["node"] == record.name)
        assert (entry["bits_a"], entry["bits_b"]) == (record.bits_a, record.bits_b)
        if op == "LutMatMul":  # two activations: only quantization parameters are constant
            assert (
                node.input[1] not in inits
                and inits[node.input[5]].data_type == onnx.TensorProto.INT32
            )
        else:
            weight = inits[node.input[1]]
            expected = onnx.TensorProto.INT8 if record.signed else onnx.TensorProto.UINT8
            assert weight.data_type == expected
            lo, hi = operand_range(record.bits_b, record.signed)  # weights: bits_b codes
            codes = onnx.numpy_helper.to_array(weight)
            assert lo <= codes.min() and codes.max() <= hi
        entry = mults[record.multiplier.sha256]
        assert entry["name"] == record.multiplier.name
        assert (exported.path / entry["file"]).is_file()
        assert inits[node.input[3]].data_type == onnx.TensorProto.INT32
    # each distinct multiplier is written once, with error metrics
    assert len(mults) == len({r.multiplier.sha256 for r in approx})
    for entry in mults.values():
        assert set(entry["metrics"]) >= {"er", "med", "wce"} and entry["metrics"]["er"] > 0


def test_manifest_layer_quantization_matches_model(lenet_export) -> None:
    manifest = json.loads((lenet_export.path / "manifest.json").read_text())
    entries = {e["layer"]: e for e in manifest["layers"]}
    quantizers = {
        name: m for name, m in lenet_export.gm.named_modules() if name.endswith("_input_quant")
    }
    for record in amx.layers(lenet_export.gm):
        q = quantizers[f"{record.name.replace('.', '_')}_input_quant"]
        scale = (q.max_val - q.min_val) / 255  # unsigned 8-bit: both ends of the calibrated range
        entry = entries[record.name]
        assert entry["activation"]["scale"] == pytest.approx(float(scale), rel=1e-6)
        assert entry["macs"] == record.macs
    assert entries["features.0"]["geometry"] == {
        "strides": [1, 1],
        "pads": [2, 2, 2, 2],
        "dilations": [1, 1],
        "group": 1,
    }


def test_load_exported_output_types(lenet_export) -> None:
    model = amx.load_exported(lenet_export.path)
    x = lenet_export.inputs[0]
    assert isinstance(model(x.numpy()), np.ndarray)
    with pytest.raises(ValueError, match="expected 1 inputs"):
        model.run(x, x)
