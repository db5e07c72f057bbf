"""Shared exports for the export tests (each torch.onnx export takes seconds: done once)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import fx, nn

import appmult_fx as amx
from appmult_fx.app.models import lenet5, resnet20


@dataclass
class Exported:
    """A converted model, the directory it was exported to, inputs to compare on and the
    model's outputs for them (computed once: the PyTorch LUT model is the slow part)."""

    gm: fx.GraphModule
    path: Path
    inputs: list[torch.Tensor]
    references: list[torch.Tensor]


def converted(
    model: nn.Module, spec: amx.Spec, shape: tuple[int, ...], seed: int
) -> fx.GraphModule:
    """``model`` converted with ``spec``, calibrated on random batches, in eval mode."""
    torch.manual_seed(seed)
    gm = amx.convert(model, spec, gradient="ste", example_inputs=torch.randn(*shape))
    amx.calibrate(gm, [torch.randn(*shape) for _ in range(2)], progress=False)
    return gm.eval()


def _export(
    tmp_path_factory: pytest.TempPathFactory, name: str, gm: fx.GraphModule, shape: tuple[int, ...]
) -> Exported:
    path = amx.export(
        gm, torch.randn(*shape), tmp_path_factory.mktemp(name), portable=True, progress=False
    )
    gen = torch.Generator().manual_seed(1234)
    inputs = [torch.randn(*shape, generator=gen) * 1.5 for _ in range(2)]
    with torch.no_grad():
        references = [gm(x) for x in inputs]
    return Exported(gm, path, inputs, references)


@pytest.fixture(scope="session")
def lenet_export(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """LeNet-5 (28x28) on the approximate unsigned mul8u_trunc4, per-tensor weights."""
    shape = (4, 1, 28, 28)
    gm = converted(lenet5(), amx.Spec().set_global("mul8u_trunc4"), shape, seed=0)
    return _export(tmp_path_factory, "lenet5", gm, shape)


@pytest.fixture(scope="session")
def resnet_export(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """ResNet-20 (8x8 inputs) on signed mul7s_trunc3, with an unsigned per-channel stage, an
    unsigned per-channel classifier and one float layer."""
    shape = (3, 3, 8, 8)
    spec = (
        amx.Spec()
        .set_global("mul7s_trunc3")
        .set_module_name_regex(r"layers\.[345]\..*", "mul8u_trunc4", per_channel=True)
        .set_module_name("fc", "mul6u_trunc3", per_channel=True)
        .set_module_name("layers.8.conv2", None)
    )
    gm = converted(resnet20(), spec, shape, seed=1)
    return _export(tmp_path_factory, "resnet20", gm, shape)


class TinyAttention(nn.Module):
    """Self-attention with two activation-activation matmuls (``q @ k^T``, ``p @ x``)."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(self.q(x), self.k(x).transpose(1, 2)) / 8**0.5
        return self.fc((scores.softmax(-1) @ x).mean(1))


@pytest.fixture(scope="session")
def attention_export(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """TinyAttention on unsigned mul8u_trunc4 (linear layers and matmuls)."""
    shape = (3, 5, 8)
    gm = converted(TinyAttention(), amx.Spec().set_global("mul8u_trunc4"), shape, seed=2)
    return _export(tmp_path_factory, "attention", gm, shape)


class ConvAttention(nn.Module):
    """A conv, then self-attention over its rows: conv, linear and matmul layers in one model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.q = nn.Linear(32, 8)
        self.k = nn.Linear(32, 8)
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.relu(self.conv(x)).permute(0, 2, 1, 3).flatten(2)  # [N, 6 rows, 4 * 8]
        scores = torch.matmul(self.q(t), self.k(t).transpose(1, 2)) / 8**0.5
        return self.fc((scores.softmax(-1) @ t).mean(1))


@pytest.fixture(scope="session")
def rectangular_export(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """ConvAttention on rectangular multipliers: 8x4 unsigned everywhere (matmuls: left operand
    8-bit, right 4-bit), an 8x2 signed per-channel conv, a 4x8 classifier."""
    shape = (3, 1, 6, 8)
    spec = (
        amx.Spec()
        .set_global("mul8x4u_trunc3")
        .set_module_name("conv", "mul8x2s_trunc2", per_channel=True)
        .set_module_name("fc", "mul4x8u_trunc2", per_channel=True)
    )
    gm = converted(ConvAttention(), spec, shape, seed=3)
    return _export(tmp_path_factory, "rectangular", gm, shape)


@pytest.fixture
def export_dir(lenet_export: Exported, tmp_path: Path) -> Path:
    """A private copy of the LeNet-5 export to damage."""
    return Path(shutil.copytree(lenet_export.path, tmp_path / "export"))
