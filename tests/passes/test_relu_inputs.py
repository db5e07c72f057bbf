"""Convs whose input is a ReLU's output hand ``lut_conv`` that input (``relu_input``), and a
converted model's gradients stay those of the conversion without it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from appmult_fx.passes.relu_inputs import drop_relu_inputs
from torch import fx, nn

import appmult_fx as amx
from tests.bench_scripts import load_bench_script


class Block(nn.Module):
    """Each way of writing a ReLU before a conv, plus a conv after a non-ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.module_relu = nn.Conv2d(16, 16, 3, padding=1)
        self.function_relu = nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect")
        self.method_relu = nn.Conv2d(16, 32, 1, stride=2)
        self.after_tanh = nn.Conv2d(32, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.module_relu(self.relu(self.stem(x)))
        x = self.function_relu(F.relu(x))
        x = self.method_relu(x.relu())
        x = self.after_tanh(torch.tanh(x))
        return self.fc(x.mean((2, 3)))


def _relu_inputs(gm: fx.GraphModule) -> dict[str, bool]:
    """Per LUT-GEMM node: whether it was given a ``relu_input``."""
    return {
        n.name: "relu_input" in n.kwargs
        for n in gm.graph.nodes
        if n.op == "call_function" and n.name.endswith("_lut_gemm")
    }


def _convert(model: nn.Module, gradient: str) -> fx.GraphModule:
    mult = amx.with_gradients(amx.multiplier("mul8s_trunc8"))
    return amx.convert(model, amx.Spec().set_global(mult), gradient=gradient)


def test_only_convs_after_a_relu_get_it() -> None:
    found = _relu_inputs(_convert(Block(), "lut"))
    assert found == {
        "stem_lut_gemm": False,
        "module_relu_lut_gemm": True,
        "function_relu_lut_gemm": True,
        "method_relu_lut_gemm": True,
        "after_tanh_lut_gemm": False,
        "fc_lut_gemm": False,
    }
    assert not any(_relu_inputs(_convert(Block(), "ste")).values())  # STE: float conv backward
    grouped = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=2))
    assert _relu_inputs(_convert(grouped, "lut")) == {"_1_lut_gemm": False}  # nothing skips


@pytest.mark.parametrize("hook", ["forward", "backward", "global"])
def test_a_hooked_relu_module_is_not_trusted(hook: str) -> None:
    model = Block()
    handle = None
    if hook == "forward":
        model.relu.register_forward_hook(lambda m, i, o: o + 1)
    elif hook == "backward":
        model.relu.register_full_backward_hook(lambda m, gi, go: None)
    else:  # a hook for every module
        handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        found = _relu_inputs(_convert(model, "lut"))
    finally:
        if handle is not None:
            handle.remove()
    assert not found["module_relu_lut_gemm"]
    assert found["function_relu_lut_gemm"] != (hook == "global")


def _pair(model: nn.Module, x: torch.Tensor) -> tuple[fx.GraphModule, fx.GraphModule]:
    """``model`` converted with LUT gradients and calibrated, and the same graph with the
    ``relu_input`` arguments removed (each conv's input gradient computed everywhere)."""
    converted = _convert(model, "lut").train()
    amx.calibrate(converted, [x], progress=False)
    plain = _convert(model, "lut").train()
    plain.load_state_dict(converted.state_dict())
    drop_relu_inputs(plain)
    return converted, plain


def _gradients(gm: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The input's and every parameter's gradient of ``sum(gm(x)**2)`` (the same dropout masks
    at every call)."""
    torch.manual_seed(0)
    gm.zero_grad()
    xi = x.clone().requires_grad_()
    gm(xi).square().sum().backward()
    grads = [xi.grad] + [p.grad.clone() for p in gm.parameters()]
    assert all(g is not None for g in grads)
    return grads


def test_gradients_equal_those_without_relu_inputs() -> None:
    """Every parameter's gradient and the input's of a converted model: the same (1e-5) as the
    same graph with the ``relu_input`` arguments removed, where the input gradient of each conv
    is computed everywhere and the ReLUs' backward discards it; compiled too."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 20, 20)
    converted, plain = _pair(Block().train(), x)
    want = _gradients(plain, x)
    for got in (_gradients(converted, x), _gradients(torch.compile(converted, fullgraph=True), x)):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_a_hook_registered_after_conversion_is_honoured() -> None:
    """A backward hook that passes the gradient where the ReLU's output is 0 (as an attribution
    method's does), registered on the converted model: its gradients are those of the graph
    without ``relu_input`` (the module's hooks are checked at every call)."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 16, 16)
    block = Block().train()
    block.relu = nn.ReLU()  # torch refuses full backward hooks on an in-place module
    converted, plain = _pair(block, x)
    for gm in (converted, plain):
        gm.relu.register_full_backward_hook(lambda m, gi, go: (F.relu(go[0]),))
    for got, want in zip(_gradients(converted, x), _gradients(plain, x)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_relu_inputs_keep_no_memory_of_their_own() -> None:
    """The convs keep their ReLU's output unpadded, the tensor the ReLU's backward keeps anyway:
    a converted model keeps exactly the bytes the graph without ``relu_input`` keeps (a padded
    copy, 4 bytes per element of each padded conv's input, would be extra)."""
    torch.manual_seed(2)
    x = torch.randn(2, 3, 16, 16)
    converted, plain = _pair(Block().train(), x)
    padded = [n for n in converted.graph.nodes if n.kwargs.get("relu_pad") is not None]
    assert len(padded) == 2  # module_relu (zeros) and function_relu (reflect)
    saved_bytes = load_bench_script("saved_memory").saved_bytes
    assert saved_bytes(converted, x) == saved_bytes(plain, x)


class Pooled(nn.Module):
    """A ReLU behind ``nn.Identity`` modules (a disabled max-pool), as in the CIFAR ResNet-18."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.relu = nn.ReLU()
        self.maxpool = nn.Identity()
        self.identity = nn.Identity()
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.identity(self.maxpool(self.relu(self.stem(x))))
        return self.fc(self.conv(x).mean((2, 3)))


def test_a_relu_behind_identities_gets_it_unless_they_are_hooked() -> None:
    assert _relu_inputs(_convert(Pooled(), "lut"))["conv_lut_gemm"]
    hooked = Pooled()
    hooked.maxpool.register_forward_hook(lambda m, i, o: o - 0.5)
    assert not _relu_inputs(_convert(hooked, "lut"))["conv_lut_gemm"]


def _round_ste(t: torch.Tensor) -> torch.Tensor:
    """Rounding to quarters, straight through: 0 below 1/8, and the gradient passes there."""
    return t + (torch.round(t * 4) / 4 - t).detach()


class RoundSTE(nn.Module):
    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return _round_ste(t)


class RoundedReLU(nn.Module):
    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return _round_ste(F.relu(t))


@pytest.mark.parametrize("change", [None, "hook", "identity swapped", "relu swapped"])
def test_identities_keep_the_gradients(change: str | None) -> None:
    """The gradients are those of the graph without ``relu_input``; also after conversion with a
    hook on the identity that rounds straight through (its output is 0 where the ReLU's is below
    1/8, and the gradient passes there), or with such a module in the identity's or the ReLU's
    place."""
    torch.manual_seed(6)
    x = torch.randn(2, 3, 12, 12)
    converted, plain = _pair(Pooled().train(), x)
    for gm in (converted, plain):
        if change == "hook":
            gm.maxpool.register_forward_hook(lambda m, i, o: _round_ste(o))
        elif change == "identity swapped":
            gm.maxpool = RoundSTE()
        elif change == "relu swapped":
            gm.relu = RoundedReLU()
    for got, want in zip(_gradients(converted, x), _gradients(plain, x)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
