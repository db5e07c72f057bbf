"""Converted models rebuilt by torch.fx tools that know nothing of appmult-fx.

``torch.fx.Transformer`` (and any Interpreter-based pass) copies a converted graph node by
node with a plain tracer and keeps no ``node.meta``. The copy must compute the same, pickle
(torch.fx re-traces its code with a plain tracer on loading), and refuse to list or export
layers whose records it lost, rather than report none.
"""

from __future__ import annotations

import pickle
import tempfile
import warnings

import pytest
import torch
import torchvision
from torch import fx, nn

import appmult_fx as amx
from appmult_fx.ops.graph_leaf import graph_leaf


class _EveryFunction(nn.Module):
    """conv behind a ReLU module, transposed conv, linear, matmul, addmm, einsum,
    nn.MultiheadAttention and scaled_dot_product_attention: every function the pass inserts."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.fc = nn.Linear(4, 4)
        self.register_buffer("bias", torch.randn(4))
        self.register_buffer("proj", torch.randn(64, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.conv2(self.relu(self.conv(x))))
        t = y.flatten(2).transpose(1, 2)
        t = self.attn(t, t, t)[0]
        t = torch.nn.functional.scaled_dot_product_attention(t, t, t, is_causal=True)
        t = self.fc(t) @ t.transpose(1, 2)
        t = torch.einsum("bij,bjk->bik", t, t)
        return torch.addmm(self.bias, t.flatten(0, 1), self.proj)


def _tiny_swin() -> nn.Module:
    return torchvision.models.SwinTransformer(
        patch_size=[2, 2], embed_dim=8, depths=[2], num_heads=[2], window_size=[2, 2],
        num_classes=3,
    )  # fmt: skip


class _FloatPointLayers(nn.Module):
    """conv1d, conv2d, linear and matmul: the layers FP multipliers take."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.conv1d = nn.Conv1d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv1d(self.conv(x).flatten(2)).transpose(1, 2)
        return self.fc(t) @ t.transpose(1, 2)


CASES = {
    "every-function": (_EveryFunction, (2, 3, 4, 4), "mul8u_trunc8"),
    "swin-windows": (_tiny_swin, (1, 3, 8, 8), "mul7s_trunc7"),
    "fp-multiplier": (_FloatPointLayers, (2, 3, 5, 5), "fp_mbm7"),
}


def _converted(case: str) -> tuple[fx.GraphModule, torch.Tensor]:
    make, shape, mult = CASES[case]
    torch.manual_seed(0)
    x = torch.randn(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = amx.convert(make().eval(), amx.Spec().set_global(mult), example_inputs=x)
        if amx.quantizers(gm):
            amx.calibrate(gm, [x], progress=False)
    return gm.eval(), x


def _own_functions(gm: fx.GraphModule) -> list[str]:
    return sorted(
        {
            f"{n.target.__module__}.{n.target.__qualname__}"
            for n in gm.graph.nodes
            if n.op == "call_function"
            and getattr(n.target, "__module__", "").split(".")[0] in ("appmult_fx", "passes")
        }
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_transformer_copy_computes_the_same_and_pickles(case: str) -> None:
    gm, x = _converted(case)
    copied = fx.Transformer(gm).transform()
    loaded = pickle.loads(pickle.dumps(copied))
    with torch.no_grad():
        want = gm(x)
        assert torch.equal(copied(x), want)
        assert torch.equal(loaded(x), want)
    assert _own_functions(loaded) == _own_functions(gm)
    assert _own_functions(gm), "the case inserts no appmult-fx function"


def test_every_function_the_pass_inserts_stays_one_node_under_a_plain_tracer() -> None:
    """What pickling relies on: re-tracing the converted code with a plain tracer (modules as
    leaves, as torch.fx does on loading) gives back the same function calls."""
    for case in CASES:
        gm, _ = _converted(case)

        class KeepModules(fx.Tracer):
            def is_leaf_module(self, _m: nn.Module, _name: str) -> bool:
                return True

        retraced = fx.GraphModule(gm, KeepModules().trace(gm))
        assert _own_functions(retraced) == _own_functions(gm), case
        for name in _own_functions(gm):
            module, _, qualname = name.rpartition(".")
            fn = getattr(__import__(module, fromlist=[qualname]), qualname)
            assert fn.__wrapped__ is not None and fn.__code__ is graph_leaf(len).__code__, name


def test_a_copy_that_lost_its_records_refuses_layers_and_export() -> None:
    gm, x = _converted("every-function")
    assert len([r for r in amx.layers(gm) if r.approximate]) >= 7
    copied = fx.Transformer(gm).transform()
    with pytest.raises(ValueError, match="lost their records"):
        amx.layers(copied)
    with pytest.raises(ValueError, match="lost their records"), tempfile.TemporaryDirectory() as d:
        amx.export(copied, x, d, progress=False)
