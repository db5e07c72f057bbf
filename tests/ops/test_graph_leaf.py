"""``graph_leaf``: one node under any tracer, plain calls otherwise."""

from __future__ import annotations

import torch
from torch import fx, nn

from appmult_fx.ops.graph_leaf import graph_leaf


@graph_leaf
def _branchy(x: torch.Tensor, parts: list[torch.Tensor], scale: float = 1.0) -> torch.Tensor:
    """Data-dependent control flow: untraceable unless kept as one node."""
    if x.dim() == 2:
        return (x + sum(parts)) * scale
    return x


class _Calls(nn.Module):
    def __init__(self, nested: bool) -> None:
        super().__init__()
        self.nested = nested

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.nested:  # the only traced value sits inside a list
            return _branchy(torch.ones(2, 2), [y], scale=2.0)
        return _branchy(x, [y], scale=2.0)


def test_a_graph_leaf_is_one_node_with_the_default_tracer() -> None:
    for nested in (False, True):
        gm = fx.symbolic_trace(_Calls(nested))
        calls = [n for n in gm.graph.nodes if n.op == "call_function"]
        assert [n.target for n in calls] == [_branchy], nested
        x, y = torch.randn(2, 2), torch.randn(2, 2)
        base = torch.ones(2, 2) if nested else x
        assert torch.equal(gm(x, y), (base + y) * 2.0)


def test_a_graph_leaf_runs_plainly_on_tensors() -> None:
    x = torch.randn(3)
    assert _branchy(x, [x]) is x
    assert _branchy.__name__ == "_branchy" and "control flow" in (_branchy.__doc__ or "")
