"""torchvision model zoo (random weights) through ``convert`` with an exact 8-bit multiplier.

For each model: the converted forward agrees with the same model under plain fake quantization
(same codes, exact products; cosine >= 0.999), backward reaches every weight, and
``amx.layers()`` lists the expected layers. Inputs are 1x3x32x32; ViT-B/16's architecture is
built at a reduced width (same depth, patch size and layer counts) to stay fast on 2 cores.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

import appmult_fx as amx

from .passes.fake_quant import cosine, fake_quant_forward

TV = torchvision.models


def _vit_b_16_narrow() -> nn.Module:
    """ViT-B/16's layout (12 layers, 12 heads, patch 16) at hidden size 192 and 32x32 input."""
    return TV.VisionTransformer(
        image_size=32,
        patch_size=16,
        num_layers=12,
        num_heads=12,
        hidden_dim=192,
        mlp_dim=768,
        num_classes=10,
    )


MODELS = {
    "resnet18": (lambda: TV.resnet18(num_classes=10), {"conv2d": 20, "linear": 1}),
    "resnet50": (lambda: TV.resnet50(num_classes=10), {"conv2d": 53, "linear": 1}),
    "mobilenet_v2": (lambda: TV.mobilenet_v2(num_classes=10), {"conv2d": 52, "linear": 1}),
    "mobilenet_v3_small": (
        lambda: TV.mobilenet_v3_small(num_classes=10),
        {"conv2d": 52, "linear": 2},
    ),
    "efficientnet_b0": (lambda: TV.efficientnet_b0(num_classes=10), {"conv2d": 81, "linear": 1}),
    "vit_b_16": (_vit_b_16_narrow, {"conv2d": 1, "linear": 73, "matmul": 24}),
    "swin_t": (lambda: TV.swin_t(num_classes=10), {"conv2d": 1, "linear": 52, "matmul": 24}),
    "convnext_tiny": (lambda: TV.convnext_tiny(num_classes=10), {"conv2d": 22, "linear": 37}),
}


class TinyEncoder(nn.Module):
    """A small nn.TransformerEncoder classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(12, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


class DataDependent(nn.Module):
    """Not traceable: branches on a tensor value."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if bool(x.mean() > -100) else x


class WithLeaf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.gate = DataDependent()
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean(dim=(2, 3))
        return self.head(self.gate(y))


def _wake(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Random-init models give near-constant outputs: set BatchNorm statistics from a batch and
    re-draw zero-initialised linear layers, then switch to eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = None
    for m in model.modules():
        if isinstance(m, nn.Linear) and not m.weight.any():
            nn.init.normal_(m.weight, std=0.05)
    if norms:
        model.train()
        with torch.no_grad():
            model(x.repeat(2, *([1] * (x.dim() - 1))) + 0.1 * torch.randn(2, *x.shape[1:]))
    return model.eval()


def _check(
    model: nn.Module, x: torch.Tensor, expected: dict[str, int], **kw
) -> list[amx.LayerRecord]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = amx.convert(
            model, amx.Spec().set_global("mul8u_exact"), example_inputs=x, gradient="ste", **kw
        )
        out = gm(x)
        ref = fake_quant_forward(gm, x)
    assert cosine(out, ref) >= 0.999
    out.square().sum().backward()
    no_grad = [
        n
        for n, p in gm.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.isfinite().all())
    ]
    assert no_grad == []
    records = amx.layers(gm)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.op] = counts.get(r.op, 0) + 1
    assert counts == expected
    assert all(r.macs is not None and r.macs > 0 for r in records)
    return records


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torchvision_model(name: str) -> None:
    torch.manual_seed(0)
    make, expected = MODELS[name]
    x = torch.randn(1, 3, 32, 32)
    records = _check(_wake(make(), x), x, expected)
    assert all(r.approximate and r.multiplier_name == "mul8u_exact" for r in records)


def test_transformer_encoder() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 12)
    records = _check(TinyEncoder().eval(), x, {"linear": 14, "matmul": 4})
    assert [r.name for r in records if r.op == "matmul"] == [
        "encoder.layers.0.self_attn.qk",
        "encoder.layers.0.self_attn.av",
        "encoder.layers.1.self_attn.qk",
        "encoder.layers.1.self_attn.av",
    ]


def test_vit_attention_parts_are_named_for_the_spec() -> None:
    model, x = _vit_b_16_narrow().eval(), torch.randn(1, 3, 32, 32)
    spec = (
        amx.Spec()
        .set_global("mul8u_exact")
        .set_module_name_regex(r"encoder\.layers\..*\.self_attention\.qk", None)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recs = {r.name: r for r in amx.layers(amx.convert(model, spec, example_inputs=x))}
    for i in range(12):
        base = f"encoder.layers.encoder_layer_{i}.self_attention"
        assert recs[f"{base}.qk"].multiplier is None
        assert all(
            recs[f"{base}.{p}"].approximate
            for p in ("q_proj", "k_proj", "v_proj", "av", "out_proj")
        )


def test_non_traceable_submodule_as_leaf() -> None:
    torch.manual_seed(0)
    model, x = WithLeaf().eval(), torch.randn(1, 3, 8, 8)
    with pytest.raises(amx.TraceFailure, match="(?s)'gate'.*leaf_modules=\\['gate'\\]"):
        amx.convert(model, amx.Spec().set_global("mul8u_exact"))
    records = _check(model, x, {"conv2d": 1, "linear": 2}, leaf_modules=["gate"])
    assert [(r.name, r.approximate, r.macs) for r in records] == [
        ("conv", True, 16 * 64 * 27),
        ("gate.fc", False, 16 * 16),
        ("head", True, 16 * 4),
    ]
