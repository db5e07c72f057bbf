"""Reference models: shapes at 8x8 / 28x28 / 32x32, traceability, torchvision by name."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from appmult_fx.app.models import build_model


@pytest.mark.parametrize("name", ["lenet5", "resnet8", "resnet20"])
@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 3)])
def test_reference_models_fit_every_size_and_trace(name: str, size: int, channels: int) -> None:
    model = build_model(name, in_channels=channels, num_classes=7, image_size=size).eval()
    x = torch.randn(2, channels, size, size)
    out = model(x)
    assert out.shape == (2, 7)
    gm = fx.symbolic_trace(model)
    torch.testing.assert_close(gm(x), out)


def test_lenet5_classic_layout_at_28() -> None:
    model = build_model("lenet5", 1, 10, 28)
    assert model.classifier[0].in_features == 16 * 5 * 5


def test_resnet_depths() -> None:
    def convs(m: nn.Module) -> int:
        return sum(isinstance(c, nn.Conv2d) for c in m.modules())

    # depth 6n+2 counts the 3x3 convs plus the fc; the 1x1 shortcuts come on top (2 of them).
    assert convs(build_model("resnet8", 3, 10)) == 7 + 2
    assert convs(build_model("resnet20", 3, 10)) == 19 + 2


def test_torchvision_model_by_name_with_one_channel() -> None:
    model = build_model("resnet18", in_channels=1, num_classes=10).eval()
    assert model.conv1.in_channels == 1
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'lenet9'"):
        build_model("lenet9")
