"""Object-type rules reach subclasses and the attention products; rules that change nothing
warn; records say how each layer is quantized."""

from __future__ import annotations

import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import appmult_fx as amx


class MyLinear(nn.Linear):
    """A subclass that computes exactly as nn.Linear."""


class StdConv2d(nn.Conv2d):
    """A weight-standardised convolution (timm style): its own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class ConvOverride(nn.Conv2d):
    """Overrides only _conv_forward: must be traced, not kept as a plain Conv2d call."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):  # noqa: ANN202
        return super()._conv_forward(x, weight * 2.0, bias)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.std, self.over = (
            nn.Conv2d(3, 4, 3),
            StdConv2d(4, 4, 3),
            ConvOverride(4, 4, 1),
        )
        self.fc, self.mine = nn.Linear(4, 4), MyLinear(4, 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.over(self.std(self.conv(x))).flatten(2).transpose(1, 2)
        y = self.attn(y, y, y)[0]
        return self.mine(self.fc(y))


def _convert(spec: amx.Spec) -> tuple[dict[str, amx.LayerRecord], torch.nn.Module]:
    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 3, 7, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = amx.convert(model, spec, example_inputs=x)
        amx.calibrate(gm, [x], progress=False)
    return {r.name: r for r in amx.layers(gm)}, gm


def test_object_type_rules_reach_subclasses() -> None:
    spec = (
        amx.Spec()
        .set_object_type(nn.Linear, "mul8u_exact")
        .set_object_type(nn.Conv2d, "mul7u_exact")
    )
    records, _ = _convert(spec)
    assert records["mine"].multiplier_name == "mul8u_exact"  # kept as one MyLinear call
    assert records["fc"].multiplier_name == "mul8u_exact"
    std = [r for n, r in records.items() if n.startswith("std.")]
    assert [r.multiplier_name for r in std] == ["mul7u_exact"]  # F.conv2d in StdConv2d.forward
    over = [r for n, r in records.items() if n == "over" or n.startswith("over.")]
    assert [r.multiplier_name for r in over] == ["mul7u_exact"]


def test_an_override_of_the_computation_is_traced_not_replaced() -> None:
    torch.manual_seed(0)
    model, x = nn.Sequential(ConvOverride(3, 2, 1)).eval(), torch.randn(1, 3, 4, 4)
    gm = amx.convert(model, amx.Spec().set_global(None))
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
        assert not torch.equal(gm(x), F.conv2d(x, model[0].weight, model[0].bias))


def test_a_matmul_rule_reaches_the_attention_products() -> None:
    records, _ = _convert(amx.Spec().set_object_type(torch.matmul, "mul8u_exact"))
    assert records["attn.qk"].multiplier_name == "mul8u_exact"
    assert records["attn.av"].multiplier_name == "mul8u_exact"
    assert records["fc"].multiplier_name is None


def test_a_module_rule_that_changes_nothing_warns() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.GRU(4, 4))
    spec = amx.Spec().set_global("mul8u_exact").set_module_name("1", None)
    spec = spec.set_module_name("2", "mul8u_trunc4")
    with pytest.warns(UserWarning, match="module_name '1', '2': no convertible layer"):
        amx.convert(model, spec)


def test_records_say_per_channel_only_where_a_weight_is_quantized_per_channel() -> None:
    records, gm = _convert(amx.Spec().set_global("mul8u_exact", per_channel=True))
    assert records["fc"].per_channel and records["conv"].per_channel
    assert not records["attn.qk"].per_channel and not records["attn.av"].per_channel


class InstanceForward(nn.Linear):
    """Sets its computation on the instance: must be traced, not kept as a Linear."""

    def __init__(self, n: int) -> None:
        super().__init__(n, n)
        self.forward = types.MethodType(lambda s, x: F.linear(x, 2.0 * s.weight, s.bias), self)


def test_a_computation_set_on_the_instance_is_traced() -> None:
    """Kept as an nn.Linear call, it would be converted without its doubled weight (relative
    error about 0.5); traced, its F.linear converts and only quantization error is left."""
    torch.manual_seed(0)
    model, x = nn.Sequential(InstanceForward(4)).eval(), torch.randn(64, 4)
    gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"))
    amx.calibrate(gm, [x], progress=False)
    with torch.no_grad():
        want, got = model(x), gm.eval()(x)
    assert (got - want).abs().max() < 0.02 * want.abs().max()


def test_a_leaf_with_its_own_forward_stays_float_with_a_record() -> None:
    torch.manual_seed(0)
    model, x = nn.Sequential(StdConv2d(3, 2, 3)).eval(), torch.randn(1, 3, 5, 5)
    with pytest.warns(UserWarning, match=r"'0' \(conv2d \(own forward\)\)"):
        gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"), example_inputs=x,
                         leaf_modules=[StdConv2d])  # fmt: skip
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    [record] = amx.layers(gm)
    assert record.multiplier is None and record.macs == 2 * 3 * 3 * 3 * 9
