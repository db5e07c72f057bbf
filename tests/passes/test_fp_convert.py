"""``convert`` with FP multipliers: conv/linear/matmul become FP LUT-GEMM layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import appmult_fx as amx
from appmult_fx.ops.fp_layers import fp_conv1d, fp_conv2d, fp_linear, fp_matmul


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding="same", padding_mode="reflect")
        self.c2 = nn.Conv2d(4, 4, 3, stride=2, groups=2, dilation=1, padding=1)
        self.c3 = nn.Conv1d(4, 3, 2)
        self.fc = nn.Linear(3 * 15, 6)
        self.w = nn.Parameter(torch.randn(6, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c1(x))
        h = self.c2(h)  # [N, 4, 4, 4]
        h = self.c3(h.flatten(2))  # [N, 3, 15]
        h = self.fc(h.flatten(1))
        return (
            torch.matmul(h, self.w)
            + torch.bmm(h[:, None, :], self.w[None].expand(h.shape[0], 6, 5))[:, 0]
        )


def _manual(
    model: Net, x: torch.Tensor, table: torch.Tensor, bw: str = "approximate"
) -> torch.Tensor:
    """What the converted graph must compute, composed by hand from the FP layer functions."""
    xp = F.pad(x, [1, 1, 1, 1], mode="reflect")
    h = F.relu(fp_conv2d(xp, model.c1.weight, model.c1.bias, table, backward=bw))
    h = fp_conv2d(
        h, model.c2.weight, model.c2.bias, table, stride=2, padding=1, groups=2, backward=bw
    )
    h = fp_conv1d(h.flatten(2), model.c3.weight, model.c3.bias, table, backward=bw)
    h = fp_linear(h.flatten(1), model.fc.weight, model.fc.bias, table, backward=bw)
    w, wb = model.w, model.w[None].expand(h.shape[0], 6, 5)
    return (
        fp_matmul(h, w, table, backward=bw) + fp_matmul(h[:, None, :], wb, table, backward=bw)[:, 0]
    )


def test_fp_convert_rewrites_every_layer_as_the_fp_layer_functions() -> None:
    model = Net()
    x = torch.randn(2, 2, 8, 8)
    gm = amx.convert(model, amx.Spec().set_global("fp_mbm7"), example_inputs=x)
    targets = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert {fp_conv2d, fp_conv1d, fp_linear, fp_matmul} <= targets
    assert not any(n.op == "call_module" and "quant" in str(n.target) for n in gm.graph.nodes)
    records = amx.layers(gm)
    assert [r.op for r in records] == ["conv2d", "conv2d", "conv1d", "linear", "matmul", "bmm"]
    assert all(
        r.multiplier_name == "fp_mbm7" and r.backward == "approximate" and r.gradient is None
        for r in records
    )
    assert records[0].macs == 2 * 4 * 8 * 8 * 2 * 9
    out = gm(x)
    assert torch.equal(out, _manual(model, x, amx.multiplier("fp_mbm7").mantissa_table))
    assert not torch.allclose(out, model(x), atol=1e-4)


@pytest.mark.parametrize("backward", ["approximate", "exact"])
def test_fp_convert_trains_with_the_chosen_backward(backward: str) -> None:
    model = Net()
    x = torch.randn(2, 2, 8, 8)
    spec = amx.Spec().set_global(amx.multiplier("fp_mbm7"))
    gm = amx.convert(model, spec, backward=backward)
    out = gm(x)
    inner = gm.get_submodule("appmult_luts")
    assert len(list(inner.buffers())) == 1  # one table buffer shared by all layers
    g = torch.randn_like(out)
    out.backward(g)
    # the same gradients as back-propagating the hand-composed FP layers with that backward
    ref = Net()
    ref.load_state_dict(model.state_dict())
    table = amx.multiplier("fp_mbm7").mantissa_table
    _manual(ref, x, table, backward).backward(g)
    for (name, p), (_, q) in zip(gm.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name
    assert all(r.backward == backward for r in amx.layers(gm))


def test_fp_rule_mixed_with_float_layers() -> None:
    model = Net()
    spec = amx.Spec().set_global("fp_mit5").set_module_name("fc", None)
    gm = amx.convert(model, spec)
    kinds = {r.name: r.multiplier_name for r in amx.layers(gm)}
    assert kinds["fc"] is None and kinds["c1"] == "fp_mit5"
