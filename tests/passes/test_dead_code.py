"""Erasing what a graph edit left unused: in-place writes, state updates and random draws that a
model computes for its own sake stay (torch's ``eliminate_dead_code`` erases them), nodes the
edit orphaned go."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from appmult_fx.passes.dead_code import erase_unused, may_write, unused_nodes
from torch import fx, nn

import appmult_fx as amx
from appmult_fx.export.freeze import freeze


class Writes(nn.Module):
    """In-place writes whose results are discarded, and computations nobody uses."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm1d(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 1.5
        y.add_(-0.25)
        torch.relu_(y)
        F.hardtanh(y, 0.0, 2.0, True)
        F.threshold(y, 0.5, 0.25, inplace=True)
        torch.add(y, 1.0, out=y)
        self.relu(y)
        self.bn(x)  # updates its running statistics
        F.dropout(x, 0.5, True)  # draws random numbers
        torch.tanh(y)
        return y + torch.rand_like(y)


WRITES = {"add_", "relu_", "hardtanh", "_threshold", "add", "relu"}  # node names


def test_may_write_finds_every_write() -> None:
    gm = fx.symbolic_trace(Writes())
    names = {n.name: may_write(gm, n) for n in gm.graph.nodes}
    assert {name for name, writes in names.items() if writes} == WRITES
    assert not names["mul"] and not names["tanh"] and not names["bn"]


def test_an_edit_erases_only_what_it_orphaned() -> None:
    """Nothing the model leaves unused goes (the output, the running statistics and the random
    draws stay those of the model); of a chain the edit orphans, the pure nodes go and a write
    stays."""
    x = torch.randn(3, 5)
    model = Writes().train()
    gm = fx.symbolic_trace(Writes().train())
    gm.load_state_dict(model.state_dict())
    keep = unused_nodes(gm)
    graph = gm.graph
    output = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(output):  # an edit: a branch, then the output no longer uses it
        branch = graph.call_function(torch.mul, (output.args[0], 3.0))
        written = graph.call_method("mul_", (branch, 2.0))
        orphan = graph.call_function(torch.sin, (written,))
    erase_unused(gm, keep)
    assert orphan not in graph.nodes  # nothing used it: the edit's own dead node goes
    assert branch in graph.nodes and written in graph.nodes  # a write stays, and what it writes
    assert keep <= set(graph.nodes)
    gm.recompile()
    torch.manual_seed(0)
    want = model(x.clone())
    torch.manual_seed(0)
    torch.testing.assert_close(gm(x.clone()), want, rtol=0, atol=0)
    torch.testing.assert_close(gm.bn.running_mean, model.bn.running_mean, rtol=0, atol=0)


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


class WeightClip(Shifted):
    """Weight clipping in the forward: an exported graph holds no state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.conv.weight.data.clamp_(-0.05, 0.05)
        return self.fc(self.conv(x).mean((2, 3)))


def _converted(model: nn.Module) -> tuple[fx.GraphModule, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    mult = amx.with_gradients(amx.multiplier("mul8s_trunc8"))
    gm = amx.convert(model, amx.Spec().set_global(mult), gradient="lut")
    amx.calibrate(gm, [x], progress=False)
    return gm.eval(), x


def test_freeze_keeps_a_discarded_in_place_write() -> None:
    gm, x = _converted(Shifted())
    frozen, _ = freeze(gm)
    assert "add_" in frozen.code
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), gm(x), rtol=1e-5, atol=1e-5)


def test_export_leaves_out_writes_to_parameters_with_a_warning(tmp_path) -> None:  # noqa: ANN001
    gm, x = _converted(WeightClip())
    with pytest.warns(UserWarning, match="in-place write.* to parameters or buffers"):
        frozen, _ = freeze(gm)
    assert "clamp_" not in frozen.code and "conv.weight" not in frozen.code
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), gm(x), rtol=1e-5, atol=1e-5)
    with pytest.warns(UserWarning, match="in-place write"):
        amx.export(gm, x[:1], tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "model.onnx").exists()
