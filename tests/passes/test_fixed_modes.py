"""Dropout follows gm.train() / gm.eval() after conversion, or convert says it cannot."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import appmult_fx as amx


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x)[0]


def _swin(attention_dropout: float = 0.5, stochastic_depth: float = 0.0) -> nn.Module:
    """A tiny Swin whose only randomness is its attention dropout or its stochastic depth."""
    return torchvision.models.SwinTransformer(
        patch_size=[2, 2], embed_dim=8, depths=[2], num_heads=[2], window_size=[2, 2],
        dropout=0.0, attention_dropout=attention_dropout,
        stochastic_depth_prob=stochastic_depth, num_classes=3,
    )  # fmt: skip


def _assert_random_in_train_mode_only(gm: nn.Module, x: torch.Tensor, tries: int = 2) -> None:
    with torch.no_grad():
        gm.eval()
        assert torch.equal(gm(x), gm(x)), "eval mode must be deterministic"
        gm.train()
        outs = [gm(x) for _ in range(tries)]
        assert any(not torch.equal(outs[0], o) for o in outs[1:]), "train mode must drop"


@pytest.mark.parametrize(
    ("make", "shape"), [(_Attention, (2, 5, 8)), (_swin, (1, 3, 8, 8))], ids=["mha", "swin"]
)
@pytest.mark.parametrize("converted_in", ["train", "eval"])
def test_attention_dropout_follows_the_mode_after_conversion(make, shape, converted_in) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model, x = make(), torch.randn(shape)
    model.train(converted_in == "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"), example_inputs=x)
        amx.calibrate(gm, [x], progress=False)
    _assert_random_in_train_mode_only(gm, x)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in gm.modules())


class _FunctionalDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.fc(x), 0.3, training=self.training)


class _AttentionDropoutByMode(nn.Module):
    def forward(self, q: torch.Tensor) -> torch.Tensor:
        p = 0.1 if self.training else 0.0
        return F.scaled_dot_product_attention(q, q, q, dropout_p=p)


class _ModuleDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.drop = nn.Linear(4, 4), nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc(x)) + F.dropout(x, 0.0, training=self.training)


@pytest.mark.parametrize(
    ("model", "named"),
    [(_FunctionalDropout(), "p=0.3, training=True"), (_AttentionDropoutByMode(), "dropout_p=0.1")],
)
def test_a_functional_dropout_whose_mode_tracing_fixed_is_reported(model, named) -> None:  # noqa: ANN001
    with pytest.warns(UserWarning, match="fixed") as caught:
        amx.convert(model.train(), amx.Spec().set_global("mul8u_exact"))
    assert any(named in str(w.message) for w in caught)


def test_dropout_modules_and_zero_rates_are_not_reported() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for mode in (True, False):
            amx.convert(_ModuleDropout().train(mode), amx.Spec().set_global("mul8u_exact"))


@pytest.mark.parametrize("converted_in", ["train", "eval"])
def test_stochastic_depth_follows_the_mode_after_conversion(converted_in) -> None:  # noqa: ANN001
    torch.manual_seed(1)
    model, x = _swin(0.0, 0.5).train(converted_in == "train"), torch.randn(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing fixed, nothing to report
        warnings.filterwarnings("ignore", message=".*before calibration.*")
        gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"), example_inputs=x)
    amx.calibrate(gm, [x], progress=False)
    _assert_random_in_train_mode_only(gm, x, tries=6)
