"""Reference classifiers sized for small images, plus any torchvision classifier by name.

- ``lenet5``: LeNet-5 (conv 6 -> conv 16 -> 120 -> 84 -> classes) for 8x8 to 32x32 inputs.
- ``resnet8`` / ``resnet20``: CIFAR-style ResNets (He et al. 2016, depth 6n+2, BasicBlocks with
  16/32/64 channels, 1x1-conv shortcuts when the shape changes); any input size >= 8.
- any other name: ``torchvision.models.get_model(name, weights=None, num_classes=...)`` with the
  first convolution rebuilt for ``in_channels`` when that differs from 3.

All are plain ``nn.Module`` trees that ``torch.fx`` traces (no data-dependent control flow).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

REFERENCE_MODELS = ("lenet5", "resnet8", "resnet20")


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max pooling; the first conv keeps the size (padding 2), the second
    is unpadded from 16x16 up (the classic 28x28 -> 5x5 layout) and padded below."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        if image_size < 4:
            raise ValueError(f"lenet5 needs images of at least 4x4, got {image_size}")
        pad2 = 0 if image_size >= 16 else 2
        side = ((image_size // 2) + 2 * pad2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=pad2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1 conv-BN shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet of depth ``6 * blocks_per_stage + 2``."""

    def __init__(self, blocks_per_stage: int, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        layers: list[nn.Module] = []
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks_per_stage):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def lenet5(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> LeNet5:
    """LeNet-5 for ``image_size`` x ``image_size`` inputs."""
    return LeNet5(in_channels, num_classes, image_size)


def resnet8(in_channels: int = 3, num_classes: int = 10) -> CifarResNet:
    """CIFAR-style ResNet-8 (one BasicBlock per stage)."""
    return CifarResNet(1, in_channels, num_classes)


def resnet20(in_channels: int = 3, num_classes: int = 10) -> CifarResNet:
    """CIFAR-style ResNet-20 (three BasicBlocks per stage)."""
    return CifarResNet(3, in_channels, num_classes)


def build_model(
    name: str, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, **kwargs: Any
) -> nn.Module:
    """A fresh (untrained) classifier: a reference model or any torchvision classifier name."""
    if name == "lenet5":
        return lenet5(in_channels, num_classes, image_size)
    if name == "resnet8":
        return resnet8(in_channels, num_classes)
    if name == "resnet20":
        return resnet20(in_channels, num_classes)
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except ValueError as exc:
        raise ValueError(
            f"unknown model {name!r}: expected one of {', '.join(REFERENCE_MODELS)} or a "
            f"torchvision classifier name ({exc})"
        ) from None
    if in_channels != 3:
        _rebuild_first_conv(model, in_channels)
    return model


def _rebuild_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first ``nn.Conv2d`` of ``model`` by one taking ``in_channels`` inputs."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.groups != 1:
                    raise ValueError(f"cannot adapt grouped first conv of {type(model).__name__}")
                new = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    1,
                    child.bias is not None,
                    child.padding_mode,
                )
                setattr(parent, child_name, new)
                return
    raise ValueError(f"{type(model).__name__} has no Conv2d to adapt to {in_channels} channels")
