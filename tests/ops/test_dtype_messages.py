"""Converted layers compute in float32: other dtypes are refused with the way out."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import fx, nn

import appmult_fx as amx

MESSAGE = r"compute in float32, got torch\.float(64|16) .*x\.float\(\)"


def _converted(model: nn.Module, multiplier: str, x: torch.Tensor) -> fx.GraphModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = amx.convert(model, amx.Spec().set_global(multiplier))
        if amx.quantizers(gm):
            amx.calibrate(gm, [x], progress=False)
    return gm.eval()


CASES = [
    ("linear", lambda: nn.Sequential(nn.Linear(4, 3)), (2, 4)),
    ("conv", lambda: nn.Sequential(nn.Conv2d(3, 2, 3)), (1, 3, 5, 5)),
]


@pytest.mark.parametrize("multiplier", ["mul8u_exact", "mul8s_exact"])
@pytest.mark.parametrize(("name", "make", "shape"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize(
    "cast",
    [
        lambda gm, x: (gm.double(), x.double()),
        lambda gm, x: (gm, x.double()),
        lambda gm, x: (gm.half(), x.half()),
    ],
    ids=["double-model", "double-input", "half-model"],
)
def test_non_float32_is_refused_with_advice(
    multiplier: str, name: str, make: Callable[[], nn.Module], shape: tuple, cast: Callable
) -> None:
    x = torch.randn(shape)
    gm, y = cast(_converted(make(), multiplier, x), x)
    with pytest.raises(RuntimeError, match=MESSAGE):
        gm(y)
