"""Every multiply of a model is listed by ``amx.layers`` with its count, whatever spells it:
recurrent modules, other matmul spellings, leaf modules called twice or holding functional
multiplies, opaque torchvision ops. Counts are written out by hand here."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import appmult_fx as amx

EXACT = amx.Spec().set_global("mul8u_exact")


def _layers(model: nn.Module, *inputs: torch.Tensor, **kw) -> tuple[list, list[str]]:  # noqa: ANN003
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gm = amx.convert(model, kw.pop("spec", EXACT), example_inputs=inputs, **kw)
    return amx.layers(gm), [str(w.message) for w in caught]


class _Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.rnn = nn.RNN(6, 2)
        self.cell = nn.LSTMCell(2, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = self.lstm(x)[0]  # [T=7, B=2, 2 * proj]
        b = self.gru(y)[0]  # [B=2, T=5, 6]
        c = self.rnn(b[0])[0]  # unbatched [5, 2]
        return a.sum() + self.cell(c)[0].sum()


def test_recurrent_modules_get_float_records_with_their_counts() -> None:
    x, y = torch.randn(7, 2, 3), torch.randn(2, 5, 4)
    records, warned = _layers(_Recurrent(), x, y)
    by_name = {r.name: r for r in records}
    # LSTM, proj 2: layer 0 gates 4*5 x (3 + 2) + proj 5 x 2, layer 1 4*5 x (4 + 2) + 5 x 2,
    # both directions; per time step and sample (7 x 2)
    lstm = 2 * (20 * 5 + 10 + 20 * 6 + 10)
    assert by_name["lstm"].macs == 7 * 2 * lstm and by_name["lstm"].op == "lstm"
    assert by_name["gru"].macs == 2 * 5 * 18 * (4 + 6)
    assert by_name["rnn"].macs == 5 * 2 * (6 + 2)
    assert by_name["cell"].macs == 5 * 12 * (2 + 3) and by_name["cell"].op == "lstm_cell"
    assert all(by_name[n].multiplier is None for n in ("lstm", "gru", "rnn", "cell"))
    assert any("cannot convert 4 multiply layer(s)" in w and "'lstm' (lstm)" in w for w in warned)


class _Spellings(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        m = torch.linalg.matmul(a, b)  # [4, 6]
        o = torch.outer(v, v) + torch.addr(m[:, :4], v, v) + v.outer(v)  # [4, 4]
        d = torch.linalg.vecdot(a, a) + torch.vdot(v, v)
        c = torch.convolution(a[None, None], b[None, None, :2, :2], None, [1, 1], [0, 0],
                              [1, 1], False, [0, 0], 1)  # fmt: skip
        z = torch.zeros(4, 6).addmm_(a, b)
        return m.sum() + o.sum() + d.sum() + c.sum() + z.sum()


def test_other_matmul_spellings_are_converted_or_recorded_float() -> None:
    a, b, v = torch.randn(4, 5), torch.randn(5, 6), torch.randn(4)
    records, warned = _layers(_Spellings(), a, b, v)
    ops = {r.op: r for r in records}
    assert ops["matmul"].multiplier is not None and ops["matmul"].macs == 4 * 5 * 6
    assert [r.macs for r in records if r.op == "outer"] == [16, 16]
    assert ops["addr"].macs == 16 and ops["addr"].multiplier is None
    for op in ("vecdot", "convolution", "addmm_"):
        assert ops[op].multiplier is None, op
    assert ops["addmm_"].macs == 4 * 5 * 6
    assert ops["vecdot"].macs == 4 * 5 and ops["vdot"].macs == 4
    assert any("cannot convert" in w and "(addmm_)" in w for w in warned)


class _Block(nn.Module):
    """A leaf block: a Linear module and a functional product with its own weight."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.w = nn.Parameter(torch.randn(4, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + F.linear(x, self.w).sum(-1, keepdim=True)


class _TwiceLeaf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blk, self.head = _Block(), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blk(self.blk(x)))


def test_a_leaf_called_twice_counts_each_call_once_and_its_functional_multiplies() -> None:
    x = torch.randn(3, 6)
    records, warned = _layers(_TwiceLeaf(), x, leaf_modules=["blk"])
    fc = [(r.name, r.macs) for r in records if r.name.endswith(".fc")]
    assert fc == [("blk@1.fc", 3 * 6 * 6), ("blk@2.fc", 3 * 6 * 6)]  # one name per call
    other = [r for r in records if r.op == "other"]
    assert [(r.name, r.macs) for r in other] == [("blk@1", 3 * 6 * 4), ("blk@2", 3 * 6 * 4)]
    assert sum(r.macs for r in records) == 2 * (108 + 72) + 3 * 6 * 2
    assert any("stay float (op 'other'" in w for w in warned)


@pytest.mark.parametrize(
    ("kwargs", "query", "keys"),
    [
        ({"batch_first": True}, (5, 8), 5),  # unbatched input
        ({"add_bias_kv": True, "add_zero_attn": True}, (5, 2, 8), 7),
        ({"batch_first": True, "kdim": 3, "vdim": 4}, (2, 5, 8), 5),
    ],
)
def test_a_leaf_attention_counts_its_projections_and_products(kwargs, query, keys) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, **kwargs)
    q = torch.randn(query)
    batch = 1 if len(query) == 2 else query[0 if kwargs.get("batch_first") else 1]
    length, source = 5, 5
    kv = torch.randn(*query[:-1], kwargs["kdim"]) if "kdim" in kwargs else q
    vv = torch.randn(*query[:-1], kwargs["vdim"]) if "vdim" in kwargs else q

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.att = mha

        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self.att(q, k, v)[0]

    records, _ = _layers(Wrap(), q, kv, vv, leaf_modules=["att"])
    kdim, vdim = kwargs.get("kdim", 8), kwargs.get("vdim", 8)
    want = batch * (2 * length * 64 + source * 8 * (kdim + vdim) + 2 * length * keys * 8)
    assert [(r.name, r.op, r.macs) for r in records] == [("att", "attention", want)]


def test_an_opaque_torchvision_op_is_recorded_other() -> None:
    torchvision = pytest.importorskip("torchvision")
    deform = torchvision.ops.DeformConv2d(2, 3, 3, padding=1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.offset, self.deform = nn.Conv2d(2, 18, 3, padding=1), deform

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.deform(x, self.offset(x))

    records, warned = _layers(Net(), torch.randn(1, 2, 4, 4), leaf_modules=["deform"])
    other = [r for r in records if r.op == "other"]
    assert [(r.name, r.multiplier) for r in other] == [("deform", None)]
    assert other[0].macs == 16 * 3 * 2 * 9  # output positions x Cout x Cin x kernel
    assert any("'deform'" in w for w in warned)
