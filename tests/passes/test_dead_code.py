"""Dead-code elimination keeps in-place operations whose results nothing uses (torch's own
``eliminate_dead_code`` erases them), and erases what is really dead."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from appmult_fx.passes.dead_code import erase_dead_nodes
from torch import fx, nn

import appmult_fx as amx


class Writes(nn.Module):
    """In-place writes whose results are discarded, and pure results nobody uses."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 1.5
        y.add_(-0.25)
        torch.relu_(y)
        y.mul_(3.0)
        F.hardtanh(y, 0.0, 2.0, True)
        F.threshold(y, 0.5, 0.25, inplace=True)
        y += 1
        self.relu(y)
        torch.tanh(y)  # pure and unused: erased
        _ = y * 2  # pure and unused: erased
        return y


def test_in_place_writes_survive_and_dead_results_go() -> None:
    x = torch.randn(3, 5)
    want = Writes()(x.clone())
    gm = fx.symbolic_trace(Writes())
    assert torch.equal(gm(x.clone()), want)
    erase_dead_nodes(gm)
    gm.recompile()
    assert torch.equal(gm(x.clone()), want)
    targets = [getattr(n.target, "__name__", n.target) for n in gm.graph.nodes]
    assert "tanh" not in targets and targets.count("mul") == 1  # x * 1.5 stays, y * 2 went
    torch_dce = fx.symbolic_trace(Writes())
    torch_dce.graph.eliminate_dead_code()
    torch_dce.recompile()
    assert not torch.equal(torch_dce(x.clone()), want)  # what this guards against


class Shifted(nn.Module):
    """A conv whose input a discarded in-place add shifts."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 1.0
        y.add_(0.5)
        return self.fc(self.conv(y).mean((2, 3)))


def test_export_keeps_a_discarded_in_place_write() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    mult = amx.with_gradients(amx.multiplier("mul8s_trunc8"))
    gm = amx.convert(Shifted(), amx.Spec().set_global(mult), gradient="lut")
    amx.calibrate(gm, [x], progress=False)
    gm.eval()
    from appmult_fx.export.freeze import freeze

    frozen, _ = freeze(gm)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), gm(x), rtol=1e-5, atol=1e-5)


class Offset(nn.Module):
    """A write (through a module returning its input) to a tensor made from a parameter, read
    only through first arguments to the output, and a write to a weight that nothing reads
    afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.ones(3, 5), requires_grad=False)
        self.lin = nn.Linear(5, 5)
        self.identity = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.offset * 1.0
        self.identity(y).add_(2.0)  # the same tensor as y
        self.lin.weight.data.clamp_(-0.1, 0.1)
        return y * 2 + x


def test_writes_reaching_the_output_stay_and_unread_ones_go() -> None:
    x = torch.randn(3, 5)
    gm = fx.symbolic_trace(Offset())
    want = gm(x)
    erase_dead_nodes(gm)
    gm.recompile()
    assert torch.equal(gm(x), want)
    targets = [getattr(n.target, "__name__", n.target) for n in gm.graph.nodes]
    assert "add_" in targets and "clamp_" not in targets and "lin.weight" not in targets


class WeightClip(nn.Module):
    """Weight clipping in the forward: after freezing, nothing reads the float weight."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.conv.weight.data.clamp_(-0.05, 0.05)
        return self.fc(self.conv(x).mean((2, 3)))


def test_export_of_a_weight_clipping_model(tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    mult = amx.with_gradients(amx.multiplier("mul8s_trunc8"))
    gm = amx.convert(WeightClip(), amx.Spec().set_global(mult), gradient="lut")
    amx.calibrate(gm, [x], progress=False)
    gm.eval()
    from appmult_fx.export.freeze import freeze

    frozen, _ = freeze(gm)
    assert "clamp_" not in frozen.code
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), gm(x), rtol=1e-5, atol=1e-5)
    amx.export(gm, x[:1], tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "model.onnx").exists()


class FloatConvClip(nn.Module):
    """Weight clipping in the forward of a conv the module then calls (it reads its weight
    itself), and a second ``get_attr`` of the same weight after a write through the first."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.scale = nn.Parameter(torch.full((4,), 3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.conv.weight.data.mul_(0.5)
        self.scale.data.add_(1.0)
        return self.conv(x) * self.scale.view(1, 4, 1, 1)


def test_writes_to_state_that_is_read_stay() -> None:
    x = torch.randn(1, 3, 6, 6)
    gm = fx.symbolic_trace(FloatConvClip())
    erase_dead_nodes(gm)
    gm.recompile()
    reference = FloatConvClip()
    gm.load_state_dict(reference.state_dict())
    for _ in range(2):  # the state each call leaves is the next call's
        torch.testing.assert_close(gm(x), reference(x), rtol=0, atol=0)
    assert "mul_" in gm.code and "add_" in gm.code
