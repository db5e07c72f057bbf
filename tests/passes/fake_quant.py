"""Plain fake-quantization reference for converted models (test helper).

Runs a converted GraphModule with every LUT-GEMM call replaced by the exact float computation
on the same integer codes (``(q + zero_point)`` in float64, i.e. quantize-dequantize with the
model's own quantizers and observers, exact products). It shares nothing with the LUT path
but the quantizer modules, so it is an independent reference for an exact multiplier.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx

from appmult_fx.ops import int_layers


def _real(q: Tensor, z: Tensor, ndim: int | None = None) -> Tensor:
    z = z.detach().double()
    if ndim is not None and z.dim() == 1:
        z = z.reshape((-1,) + (1,) * (ndim - 1))
    return q.double() + z


def _conv(qx, zx, qw, zw, table, ga, gb, stride, dilation, groups):  # noqa: ANN001, ANN202
    conv = F.conv1d if qw.dim() == 3 else F.conv2d
    return conv(
        _real(qx, zx), _real(qw, zw, qw.dim()), stride=stride, dilation=dilation, groups=groups
    )


def _linear(qx, zx, qw, zw, table, ga, gb):  # noqa: ANN001, ANN202
    return F.linear(_real(qx, zx), _real(qw, zw, 2))


def _matmul(qa, za, qb, zb, table, ga, gb):  # noqa: ANN001, ANN202
    return torch.matmul(_real(qa, za), _real(qb, zb))


def _einsum(eq, qa, za, qb, zb, table, ga, gb):  # noqa: ANN001, ANN202
    return torch.einsum(eq, _real(qa, za), _real(qb, zb))


def _conv_transpose(
    qx, zx, qw, zw, table, ga, gb, stride, padding, output_padding, dilation, groups
):  # noqa: ANN001, ANN202, E501
    conv = F.conv_transpose1d if qw.dim() == 3 else F.conv_transpose2d
    return conv(
        _real(qx, zx), _real(qw, zw), None, stride, padding, output_padding, groups, dilation
    )


EXACT = {
    int_layers.lut_conv: _conv,
    int_layers.lut_linear: _linear,
    int_layers.lut_matmul: _matmul,
    int_layers.lut_einsum: _einsum,
    int_layers.lut_conv_transpose: _conv_transpose,
}


class _FakeQuant(fx.Interpreter):
    def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
        return super().call_function(EXACT.get(target, target), args, kwargs)


def fake_quant_forward(gm: fx.GraphModule, *inputs: Any) -> Any:
    """``gm(*inputs)`` with exact products on the quantized codes (same quantizers)."""
    replaced = sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target in EXACT)
    assert replaced > 0, "the model has no LUT-GEMM nodes"
    return _FakeQuant(gm).run(*inputs)


def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine similarity of two tensors, flattened (float64)."""
    return float(F.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))
