"""Review fixes: unbatched attention and conv inputs, spec option checks, pickling."""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import fx, nn

import appmult_fx as amx
from appmult_fx.ops.int_layers import rescale

from .fake_quant import fake_quant_forward

EXACT = "mul8u_exact"


def _convert(model: nn.Module, spec: amx.Spec, *batches: tuple) -> fx.GraphModule:
    """Convert ``model``, calibrate it on ``batches`` (if it has observers), eval mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = amx.convert(model, spec)
        if amx.quantizers(gm):
            amx.calibrate(gm, batches, progress=False)
    return gm.eval()


# ---- unbatched nn.MultiheadAttention -----------------------------------------------------


class Attention(nn.Module):
    """``nn.MultiheadAttention`` called with masks and fixed weight options."""

    def __init__(self, heads: int, batch_first: bool, average: bool) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, heads, batch_first=batch_first)
        self.average = average

    def forward(
        self, q: torch.Tensor, kv: torch.Tensor, kpm: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mha(
            q, kv, kv, key_padding_mask=kpm, attn_mask=mask, average_attn_weights=self.average
        )


def _unbatched_inputs(length: int, source: int, heads: int, bool_mask: bool) -> tuple:
    kpm = torch.zeros(source, dtype=torch.bool)
    kpm[-1] = True
    if bool_mask:
        mask = torch.rand(length, source) < 0.3
        mask[:, 0] = False
    else:
        mask = torch.randn(heads, length, source)
    return torch.randn(length, 8), torch.randn(source, 8), kpm, mask


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize(("heads", "length", "bool_mask"), [(1, 8, True), (2, 5, False)])
@pytest.mark.parametrize("average", [True, False])
def test_unbatched_attention_equals_torch_in_float(
    batch_first: bool, heads: int, length: int, bool_mask: bool, average: bool
) -> None:
    """A float spec keeps the swapped attention equal to torch's on unbatched inputs
    (outputs and attention weights shaped as torch returns them)."""
    torch.manual_seed(heads + length)
    model = Attention(heads, batch_first, average).eval()
    gm = _convert(model, amx.Spec().set_global(None))
    inputs = _unbatched_inputs(length, 6, heads, bool_mask)
    with torch.no_grad():
        want, got = model(*inputs), gm(*inputs)
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("batch_first", [True, False])
def test_unbatched_attention_equals_batched_with_exact_multiplier(batch_first: bool) -> None:
    """Converted with an exact multiplier, an unbatched call gives the batched call's
    result on the input with a batch of one, bit for bit."""
    torch.manual_seed(7)
    model = Attention(2, batch_first, average=False).eval()
    q, kv, kpm, mask = _unbatched_inputs(5, 6, 2, bool_mask=True)
    dim = 0 if batch_first else 1
    batched = (q.unsqueeze(dim), kv.unsqueeze(dim), kpm.unsqueeze(0), mask)
    gm = _convert(model, amx.Spec().set_global(EXACT), batched)
    with torch.no_grad():
        out, weights = gm(q, kv, kpm, mask)
        want_out, want_weights = gm(*batched)
    assert torch.equal(out, want_out.squeeze(dim))
    assert torch.equal(weights, want_weights.squeeze(0))


def test_attention_with_mixed_batched_and_unbatched_inputs_raises() -> None:
    model = Attention(2, batch_first=True, average=True).eval()
    gm = _convert(model, amx.Spec().set_global(None))
    q, kv, kpm, mask = _unbatched_inputs(5, 6, 2, bool_mask=True)
    with pytest.raises(ValueError, match=r"must all be 3-D \(batched\) or all 2-D"):
        gm(q.unsqueeze(0), kv, kpm, mask)
    with pytest.raises(ValueError, match="key_padding_mask must be 1-D"):
        gm(q, kv, kpm.unsqueeze(0), mask)


# ---- unbatched convolutions --------------------------------------------------------------


class ReluConv(nn.Module):
    """conv -> ReLU -> conv: the second conv gets the ReLU input (LUT gradients)."""

    def __init__(self, conv: type[nn.Module]) -> None:
        super().__init__()
        self.first, self.relu = conv(3, 4, 3, padding=1), nn.ReLU()
        self.second = conv(4, 5, 3, padding=1, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.relu(self.first(x)))


@pytest.mark.parametrize(("conv", "shape"), [(nn.Conv2d, (3, 7, 6)), (nn.Conv1d, (3, 9))])
def test_unbatched_conv_equals_batched_and_fake_quant(conv: type, shape: tuple) -> None:
    """An unbatched conv input gives the batch-of-one result (values and input gradient,
    bit for bit), shaped as torch's, and agrees with plain fake quantization."""
    torch.manual_seed(3)
    model = ReluConv(conv).eval()
    x = torch.randn(shape)
    batch = (x.unsqueeze(0),)
    gm = _convert(model, amx.Spec().set_global(EXACT, per_channel=True), batch)
    xs = x.clone().requires_grad_(), x.unsqueeze(0).clone().requires_grad_()
    out, batched = gm(xs[0]), gm(xs[1])
    assert out.shape == model(x).shape
    assert torch.equal(out, batched.squeeze(0))
    out.sum().backward()
    batched.sum().backward()
    assert torch.equal(xs[0].grad, xs[1].grad.squeeze(0))
    ste = _convert(model, amx.Spec().set_global(EXACT, per_channel=True, gradient="ste"), batch)
    with torch.no_grad():  # the helper does not take lut_conv's ReLU arguments: the STE twin
        assert torch.equal(ste(x), out)
        ref = fake_quant_forward(ste, x)
    torch.testing.assert_close(out.detach().double(), ref.double(), atol=1e-4, rtol=1e-5)


def test_unbatched_transposed_conv_is_refused_clearly() -> None:
    model = nn.Sequential(nn.ConvTranspose2d(3, 2, 3))
    x = torch.randn(1, 3, 5, 5)
    gm = _convert(model, amx.Spec().set_global(EXACT), (x,))
    with pytest.raises(RuntimeError, match=r"add the batch dimension"):
        gm(x[0])


# ---- spec option checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"per_channel": "no"}, TypeError, "per_channel must be true or false"),
        ({"per_channel": 2}, TypeError, "per_channel"),
        ({"momentum": "0.5"}, TypeError, "momentum must be a number"),
        ({"momentum": True}, TypeError, "momentum"),
        ({"momentum": float("nan")}, ValueError, r"momentum must be in \(0, 1\]"),
        ({"momentum": 0}, ValueError, "momentum"),
        ({"gradient": 1}, ValueError, "gradient must be one of"),
        ({"gradient": "LUT"}, ValueError, "gradient"),
        ({"backward": "approx"}, ValueError, "backward must be one of"),
    ],
)
def test_bad_rule_options_raise_naming_rule_and_option(
    options: dict, error: type, match: str
) -> None:
    with pytest.raises(error, match=f"global rule: {match}"):
        amx.Spec().set_global(EXACT, **options)
    with pytest.raises(error, match=f"module_name 'fc': {match}"):
        amx.Spec().set_module_name("fc", EXACT, **options)
    with pytest.raises(error, match=f"object_type 'nn.Linear': {match}"):
        amx.Spec().set_object_type(nn.Linear, EXACT, **options)
    with pytest.raises(error, match=f"module_name_regex 'f.*': {match}"):
        amx.Spec().set_module_name_regex("f.*", EXACT, **options)


def test_valid_rule_options_are_kept() -> None:
    for flag, want in ((1, True), (0, False), (np.True_, True)):  # numbers that are bools
        assert amx.Spec().set_global(EXACT, per_channel=flag).global_rule.per_channel is want
    for number in (np.float32(0.25), np.int64(1), torch.tensor(0.5)):  # any real number
        assert amx.Spec().set_global(EXACT, momentum=number).global_rule.momentum == float(number)
    spec = amx.Spec().set_global(EXACT, per_channel=True, momentum=1, gradient="ste")
    rule = spec.global_rule
    assert rule.per_channel is True and rule.momentum == 1 and rule.gradient == "ste"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            '[module_name]\nfc = { multiplier = "mul8u_exact", per_channel = "false" }\n',
            "per_channel",
        ),
        ('global = { multiplier = "mul8u_exact", momentum = "0.1" }\n', "momentum"),
        ('global = { multiplier = "mul8u_exact", gradient = "exact" }\n', "gradient"),
    ],
)
def test_spec_file_with_bad_option_raises(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"spec.toml: .*{match}"):
        amx.Spec.from_file(path)


def test_spec_file_per_channel_false_is_per_tensor(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text('[module_name]\nfc = { multiplier = "mul8u_exact", per_channel = false }\n')
    model = nn.Sequential()
    model.add_module("fc", nn.Linear(4, 3))
    gm = _convert(model, amx.Spec.from_file(path), (torch.randn(2, 4),))
    assert amx.layers(gm)[0].per_channel is False


# ---- pickling ----------------------------------------------------------------------------


class Mixed(nn.Module):
    """conv -> ReLU -> conv -> attention (with a padding mask) -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.relu(self.conv(x))).flatten(2).transpose(1, 2)
        y = self.attn(y, y, y, key_padding_mask=y[..., 0] > 1.0)[0]
        return self.fc(y)


def _torch_roundtrip(gm: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(gm, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _grads(gm: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    gm.train()
    gm.zero_grad()
    gm(x).square().sum().backward()
    return {n: p.grad.clone() for n, p in gm.named_parameters()}


@pytest.mark.parametrize(
    "roundtrip",
    [
        lambda gm: pickle.loads(pickle.dumps(gm)),
        _torch_roundtrip,
        lambda gm: pickle.loads(pickle.dumps(copy.deepcopy(pickle.loads(pickle.dumps(gm))))),
    ],
    ids=["pickle", "torch.save", "pickle-deepcopy-pickle"],
)
def test_converted_model_pickles_with_identical_outputs_records_and_training(roundtrip) -> None:  # noqa: ANN001
    torch.manual_seed(5)
    x = torch.randn(2, 3, 6, 6)
    gm = _convert(
        Mixed().eval(), amx.Spec().set_global(EXACT).set_module_name("conv2", "mul7u_exact"), (x,)
    )
    loaded = roundtrip(gm)
    with torch.no_grad():
        assert torch.equal(loaded(x), gm(x))
    assert [n.name for n in loaded.graph.nodes] == [n.name for n in gm.graph.nodes]
    assert [(r.name, r.multiplier_name, r.parts) for r in amx.layers(loaded)] == [
        (r.name, r.multiplier_name, r.parts) for r in amx.layers(gm)
    ]
    want, got = _grads(gm, x), _grads(loaded, x)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)


class _WithBuffer(nn.Module):
    """A product with a buffer and one with a constant tensor: their ``get_attr`` nodes move
    when torch.fx re-traces the pickled code."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("w", torch.randn(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.fc(x) @ self.w) @ torch.ones(3, 2)


def test_models_with_buffers_and_constants_pickle_with_their_records() -> None:
    torch.manual_seed(6)
    x = torch.randn(5, 4)
    gm = _convert(_WithBuffer().eval(), amx.Spec().set_global(EXACT), (x,))
    loaded = pickle.loads(pickle.dumps(gm))
    with torch.no_grad():
        assert torch.equal(loaded(x), gm(x))
    assert sorted(n.name for n in loaded.graph.nodes) == sorted(n.name for n in gm.graph.nodes)
    assert [r.name for r in amx.layers(loaded)] == [r.name for r in amx.layers(gm)]
    assert len(amx.layers(gm)) == 3


def _doubled_output(graph: fx.Graph) -> None:
    """Another graph: the output times 2."""
    out = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(out):
        doubled = graph.call_function(torch.mul, (out.args[0], 2.0))
    out.args = (doubled,)


def _same_rescale(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``rescale`` under another name: the same result from another target."""
    return rescale(*args, **kwargs)


def _other_target(graph: fx.Graph) -> None:
    """Same ops in the same order, one calling another function."""
    next(n for n in graph.nodes if n.target is rescale).target = _same_rescale


@pytest.mark.parametrize("edit", [_doubled_output, _other_target], ids=["replaced", "retargeted"])
def test_a_graph_edited_after_conversion_unpickles_with_a_warning(edit) -> None:  # noqa: ANN001
    """The snapshot saved with the model no longer matches the graph (replaced, or one node
    calling another function): the model still computes what its code says, and the lost
    records are reported (a warning, then amx.layers refuses), not put on the new graph."""
    torch.manual_seed(7)
    x = torch.randn(5, 4)
    gm = _convert(_WithBuffer().eval(), amx.Spec().set_global(EXACT), (x,))
    edited = copy.deepcopy(gm.graph)
    edit(edited)
    gm.graph = edited
    gm.recompile()
    with pytest.warns(UserWarning, match="layer records are lost"):
        loaded = pickle.loads(pickle.dumps(gm))
    with torch.no_grad():
        assert torch.equal(loaded(x), gm(x))
    with pytest.raises(ValueError, match="lost their records"):
        amx.layers(loaded)
