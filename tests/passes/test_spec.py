"""Spec: QConfigMapping precedence, files (JSON/TOML), and every error path."""

import json

import pytest
import torch
import torch.nn.functional as F
from appmult_fx.passes.spec import Rule
from torch import nn

import appmult_fx as amx


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.features(x)
        x = F.conv2d(x, self.features[2].weight[:, :, :1, :1])
        return self.head(x.mean((2, 3)))


def _assignment(spec):
    gm = amx.convert(Net(), spec)
    return {r.name: r.multiplier_name for r in amx.layers(gm)}


def test_precedence_global_type_regex_name() -> None:
    spec = (
        amx.Spec()
        .set_global("mul8u_exact")
        .set_object_type(nn.Linear, "mul7u_exact")
        .set_object_type(F.conv2d, "mul6u_exact")
        .set_module_name_regex(r"features\.2", "mul5u_exact")
        .set_module_name("features", "mul4u_exact")
    )
    got = _assignment(spec)
    assert got == {
        "features.0": "mul4u_exact",
        "features.2": "mul4u_exact",
        "conv2d": "mul6u_exact",
        "head": "mul7u_exact",
    }
    spec.set_module_name("features.2", None)
    assert _assignment(spec)["features.2"] is None  # exact name beats its parent module
    spec = (
        amx.Spec()
        .set_global("mul8u_exact")
        .set_module_name_regex("features", "mul4u_exact")
        .set_object_type("Conv2d", None)
    )
    got = _assignment(spec)
    assert got["features.0"] == "mul4u_exact" and got["conv2d"] == "mul8u_exact"


def test_unassigned_layers_stay_float() -> None:
    got = _assignment(amx.Spec().set_module_name("head", "mul8s_exact"))
    assert got == {"features.0": None, "features.2": None, "conv2d": None, "head": "mul8s_exact"}


def test_rule_options_reach_the_layer() -> None:
    spec = (
        amx.Spec()
        .set_global("mul8u_exact", gradient="ste", per_channel=True)
        .set_module_name("head", "mul8u_exact")
    )
    gm = amx.convert(Net(), spec, gradient="lut")
    recs = {r.name: r for r in amx.layers(gm)}
    assert recs["features.0"].gradient == "ste" and recs["features.0"].per_channel
    assert recs["head"].gradient == "lut" and not recs["head"].per_channel


def test_from_dict_json_and_toml(tmp_path) -> None:
    data = {
        "global": "mul8u_exact",
        "object_type": {"nn.Linear": {"multiplier": "mul7u_exact", "gradient": "ste"}},
        "module_name_regex": [["features\\.2", "mul5u_exact"]],
        "module_name": {"features.0": None},
    }
    expect = {
        "features.0": None,
        "features.2": "mul5u_exact",
        "conv2d": "mul8u_exact",
        "head": "mul7u_exact",
    }
    assert _assignment(amx.Spec.from_dict(data)) == expect
    (tmp_path / "s.json").write_text(json.dumps(data))
    assert _assignment(amx.Spec.from_file(tmp_path / "s.json")) == expect
    (tmp_path / "s.toml").write_text(
        'global = "mul8u_exact"\n'
        'module_name_regex = [["features\\\\.2", "mul5u_exact"]]\n'
        '[object_type]\n"nn.Linear" = { multiplier = "mul7u_exact", gradient = "ste" }\n'
        '[module_name]\n"features.0" = "float"\n'
    )
    assert _assignment(amx.Spec.from_file(tmp_path / "s.toml")) == expect
    assert (
        amx.Spec.from_dict(amx.Spec.from_dict(data).to_dict()).to_dict()
        == amx.Spec.from_dict(data).to_dict()
    )


def test_multiplier_by_object_name_and_path(tmp_path) -> None:
    mult = amx.multiplier("mul6s_exact")
    path = mult.save(tmp_path / "m6.lut")
    for ref in (mult, "mul6s_exact", str(path)):
        assert _assignment(amx.Spec().set_global(ref))["head"] == "mul6s_exact"
    (tmp_path / "spec.json").write_text(json.dumps({"global": path.name}))
    assert _assignment(amx.Spec.from_file(tmp_path / "spec.json"))["head"] == "mul6s_exact"


def test_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown spec key"):
        amx.Spec.from_dict({"globl": "mul8u_exact"})
    with pytest.raises(ValueError, match="neither a built-in"):
        amx.Spec().set_global("no_such_mult")
    with pytest.raises(ValueError, match="unknown object type"):
        amx.Spec().set_object_type("Conv4d", "mul8u_exact")
    with pytest.raises(ValueError, match="unsupported object type"):
        amx.Spec().set_object_type(nn.ReLU, "mul8u_exact")
    with pytest.raises(ValueError, match="gradient"):
        amx.Spec().set_global("mul8u_exact", gradient="approx")
    with pytest.raises(ValueError, match="unknown rule option"):
        amx.Spec().set_global("mul8u_exact", bitz=3)
    with pytest.raises(ValueError, match="bad module_name_regex"):
        amx.Spec().set_module_name_regex("(", "mul8u_exact")
    with pytest.raises(ValueError, match="names no layer"):
        amx.convert(Net(), amx.Spec().set_module_name("feature", "mul8u_exact"))
    with pytest.warns(UserWarning, match="matches no layer"):
        amx.convert(Net(), amx.Spec().set_module_name_regex("nothing", "mul8u_exact"))
    with pytest.raises(ValueError, match="'multiplier' key"):
        amx.Spec.from_dict({"global": {"gradient": "ste"}})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        amx.Spec.from_file(tmp_path / "bad.json")
    (tmp_path / "bad.yaml").write_text("global: x")
    with pytest.raises(ValueError, match=r"\.json or \.toml"):
        amx.Spec.from_file(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="momentum"):
        Rule(None, momentum=2.0)


def test_fp_multiplier_files_by_path(tmp_path, shared) -> None:
    """ApproxTrain .bin tables and our FP archives load through load_multiplier and Spec paths."""
    bin_path = shared / "approxtrain_luts" / "MBM_7.bin"
    mult = amx.load_multiplier(bin_path)
    assert mult.kind == "fp" and torch.equal(
        mult.mantissa_table, amx.multiplier("fp_mbm7").mantissa_table
    )
    archive = amx.multiplier("fp_mit5").save(tmp_path / "mit5.npz")
    assert amx.load_multiplier(archive).sha256 == amx.multiplier("fp_mit5").sha256
    gm = amx.convert(Net(), amx.Spec().set_global(str(bin_path)))
    assert {r.multiplier.kind for r in amx.layers(gm)} == {"fp"}


def test_rectangular_multiplier_is_accepted_by_spec_files() -> None:
    spec = amx.Spec.from_dict({"global": "mul8x4u_exact", "module_name": {"fc": "mul8x2s_trunc2"}})
    assert (spec.global_rule.multiplier.bits_a, spec.global_rule.multiplier.bits_b) == (8, 4)
    fc = spec.rule_for("fc", ()).multiplier
    assert (fc.bits_a, fc.bits_b, fc.signed) == (8, 2, True)
