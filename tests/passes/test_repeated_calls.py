"""A module called more than once: one layer per call (``a@1``, ``a@2``), each with its own
rule, count and quantizers; a rule for the module covers every call; the model pickles,
exports and searches with every call."""

from __future__ import annotations

import json
import pickle
import warnings

import pytest
import torch
from torch import nn

import appmult_fx as amx
from appmult_fx.assignment.engine import Engine

from .fake_quant import fake_quant_forward


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.fc = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.a(torch.relu(self.a(x)))))


def _converted(spec: amx.Spec) -> tuple[torch.fx.GraphModule, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = amx.convert(Twice().eval(), spec, example_inputs=x)
        amx.calibrate(gm, [x], progress=False)
    return gm.eval(), x


def test_each_call_is_a_layer_and_module_rules_cover_all_calls() -> None:
    gm, x = _converted(amx.Spec().set_global("mul8u_exact").set_module_name("a", "mul7u_exact"))
    records = [(r.name, r.multiplier_name, r.macs) for r in amx.layers(gm)]
    assert records == [
        ("a@1", "mul7u_exact", 4 * 8 * 8),
        ("a@2", "mul7u_exact", 4 * 8 * 8),
        ("fc", "mul8u_exact", 4 * 8 * 2),
    ]
    with torch.no_grad():
        assert torch.equal(gm(x), fake_quant_forward(gm, x))


def test_a_call_rule_beats_the_module_rule_and_the_model_pickles_and_exports(tmp_path) -> None:  # noqa: ANN001
    spec = amx.Spec().set_global("mul8u_exact").set_module_name("a@2", "mul8u_trunc4")
    gm, x = _converted(spec)
    assert [r.multiplier_name for r in amx.layers(gm)] == [
        "mul8u_exact",
        "mul8u_trunc4",
        "mul8u_exact",
    ]
    loaded = pickle.loads(pickle.dumps(gm))
    assert [r.name for r in amx.layers(loaded)] == ["a@1", "a@2", "fc"]
    amx.export(gm, x, tmp_path, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [(r["layer"], r["multiplier"]) for r in manifest["layers"]] == [
        ("a@1", "mul8u_exact"),
        ("a@2", "mul8u_trunc4"),
        ("fc", "mul8u_exact"),
    ]
    with torch.no_grad():
        want = gm(x).numpy()
    assert (amx.load_exported(tmp_path).run(x.numpy())[0] == want).all()


def test_the_search_engine_counts_and_swaps_each_call() -> None:
    torch.manual_seed(0)
    model, x = Twice().eval(), torch.randn(16, 8)
    engine = Engine(model, (8, 8, False), [x], x[:1])
    assert engine.macs() == {"a@1": 8 * 8, "a@2": 8 * 8, "fc": 8 * 2}  # per sample
    table = amx.multiplier("mul8u_trunc4").table
    spec = amx.Spec().set_global("mul8u_exact").set_module_name("a@2", "mul8u_trunc4")
    fresh = amx.convert(model, spec, gradient="ste", example_inputs=x[:1])
    for src, dst in zip(amx.quantizers(engine.gm), amx.quantizers(fresh), strict=True):
        dst.load_state_dict(src.state_dict())
    with torch.no_grad():
        assert torch.equal(engine.run(x, {"a@2": table}), fresh.eval()(x))


def test_an_anchored_regex_covers_every_call_of_its_module() -> None:
    gm, _ = _converted(amx.Spec().set_global("mul8u_exact").set_module_name_regex(r"a$", None))
    assert [r.multiplier_name for r in amx.layers(gm)] == [None, None, "mul8u_exact"]


class _Clash(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.d = nn.ModuleDict({"fc": nn.Linear(4, 4), "fc@1": nn.Linear(4, 4)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d["fc@1"](self.d["fc"](self.d["fc"](x)))


def test_a_module_named_like_a_call_is_refused() -> None:
    with pytest.raises(ValueError, match=r"layer names \['d.fc@1'\] are taken twice"):
        amx.convert(_Clash(), amx.Spec().set_global("mul8u_exact"))
