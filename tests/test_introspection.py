"""``amx.layers()`` covers every multiply of a model (float ones included) with its count."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import appmult_fx as amx
from appmult_fx.cli import main
from appmult_fx.cli.layers import format_table


class Mixed(nn.Module):
    """Every kind of multiply the converter knows, plus one hidden in a leaf module."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.line = nn.Conv1d(4, 16, 3)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.qkv = nn.Linear(16, 48)
        self.leaf = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.depthwise(self.stem(x)))  # [N, 4, 8, 8]
        y = self.line(y.flatten(2)).transpose(1, 2)  # [N, 62, 16]
        y = self.encoder(y)
        q, k, v = self.qkv(y).unflatten(-1, (3, 2, 8)).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        y = torch.einsum("bld,bmd->blm", y, y) @ y
        return self.head(self.leaf(y).mean(dim=1))


def _convert(spec: amx.Spec, x: torch.Tensor) -> list[amx.LayerRecord]:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = amx.convert(Mixed().eval(), spec, example_inputs=x, leaf_modules=["leaf"])
    return amx.layers(gm)


def _flop_counter_macs(x: torch.Tensor) -> int:
    torch.manual_seed(0)
    counter = FlopCounterMode(display=False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused encoder kernel is not counted
    try:  # the math attention backend is made of bmm ops every torch version counts
        with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            Mixed().eval()(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops() // 2


def test_records_cover_every_multiply_of_the_model() -> None:
    x = torch.randn(2, 3, 4, 4)
    records = _convert(amx.Spec().set_global("mul8u_exact"), x)
    assert all(r.macs is not None and r.macs > 0 for r in records)
    assert sum(r.macs for r in records) == _flop_counter_macs(x)  # torch's own count agrees
    ops = [r.op for r in records]
    assert (
        ops.count("conv_transpose2d") == 1 and ops.count("einsum") == 1 and ops.count("matmul") == 5
    )
    assert [(r.name, r.approximate) for r in records if r.name.startswith("leaf")] == [
        ("leaf.0", False),
        ("leaf.2", False),
    ]


def test_float_layers_keep_their_counts_and_share_is_computable() -> None:
    x = torch.randn(1, 3, 4, 4)
    floats = _convert(amx.Spec(), x)
    assert all(r.multiplier is None and r.macs for r in floats)
    spec = amx.Spec().set_global("mul8u_exact").set_module_name("encoder", None)
    records = _convert(spec, x)
    assert [r.macs for r in records] == [r.macs for r in floats]
    approx = sum(r.macs for r in records if r.approximate)
    encoder = sum(r.macs for r in records if r.name.startswith("encoder"))
    leaf = sum(r.macs for r in records if r.name.startswith("leaf"))
    assert approx == sum(r.macs for r in records) - encoder - leaf
    table = format_table(records)
    assert f"MACs: {sum(r.macs for r in records):,} in total" in table
    assert f"{approx / sum(r.macs for r in records):.1%} through approximate multipliers" in table


def test_layers_cli_prints_table_with_totals(capsys) -> None:  # noqa: ANN001
    assert (
        main(
            [
                "layers",
                "mobilenet_v3_small",
                "mul8u_exact",
                "--image-size",
                "32",
                "--num-classes",
                "10",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "features.0.0" in out and "classifier.3" in out
    assert "54 of 54 multiply layers approximate" in out
    assert "100.0% through approximate multipliers" in out


def test_layers_cli_shows_both_widths_of_a_rectangular_multiplier(capsys, tmp_path) -> None:  # noqa: ANN001
    spec = tmp_path / "spec.toml"
    spec.write_text('global = "mul8x4s_trunc2"\n[module_name]\nfc = "mul8x2u_exact"\n')
    args = ["layers", "resnet18", str(spec), "--image-size", "32", "--num-classes", "10"]
    assert main(args) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["conv1"][2:4] == ["mul8x4s_trunc2", "8x4s"]
    assert rows["layer4.1.conv2"][2:4] == ["mul8x4s_trunc2", "8x4s"]
    assert rows["fc"][2:4] == ["mul8x2u_exact", "8x2u"]
