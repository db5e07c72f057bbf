"""nn.MultiheadAttention and F.scaled_dot_product_attention as assignable LUT-GEMM parts."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from appmult_fx.luts.multiplier import Multiplier
from appmult_fx.passes.attention import ApproxMultiheadAttention
from torch import nn

import appmult_fx as amx

from .fake_quant import fake_quant_forward

EXACT = amx.multiplier("mul8u_exact")
PARTS = ("q_proj", "k_proj", "v_proj", "qk", "av", "out_proj")


def _approx_multiplier() -> Multiplier:
    table = EXACT.table.clone()
    table[100:, 100:] -= 300
    return Multiplier("mul8u_test_approx", 8, False, table)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_approx_mha_equals_torch_mha_in_float(batch_first: bool, need_weights: bool) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    ours = ApproxMultiheadAttention(mha).eval()
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    if not batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    attn_mask = torch.rand(5, 7) < 0.3
    attn_mask[:, 0] = False
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[1, -3:] = True
    for kwargs in (
        {},
        {"attn_mask": attn_mask, "key_padding_mask": kpm},
        {"attn_mask": torch.randn(2 * 4, 5, 7), "average_attn_weights": False},
    ):
        want = mha(q, kv, kv, need_weights=need_weights, **kwargs)
        got = ours(q, kv, kv, need_weights=need_weights, **kwargs)
        torch.testing.assert_close(got[0], want[0], atol=1e-6, rtol=1e-5)
        if need_weights:
            torch.testing.assert_close(got[1], want[1], atol=1e-6, rtol=1e-5)
        else:
            assert got[1] is None and want[1] is None


def test_approx_mha_with_kdim_vdim_and_no_bias() -> None:
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(8, 2, bias=False, kdim=6, vdim=5, batch_first=True).eval()
    ours = ApproxMultiheadAttention(mha)
    q, k, v = torch.randn(3, 4, 8), torch.randn(3, 6, 6), torch.randn(3, 6, 5)
    torch.testing.assert_close(ours(q, k, v)[0], mha(q, k, v)[0], atol=1e-6, rtol=1e-5)
    assert (
        ours.q_proj.bias is None and ours.k_proj.in_features == 6 and ours.v_proj.in_features == 5
    )


def test_unsupported_mha_options_raise() -> None:
    with pytest.raises(ValueError, match="add_bias_kv"):
        ApproxMultiheadAttention(nn.MultiheadAttention(8, 2, add_bias_kv=True))


class Encoder(nn.Module):
    def __init__(self, layers: int = 2) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _convert(model: nn.Module, spec: amx.Spec, x: torch.Tensor, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = amx.convert(model, spec, example_inputs=x, **kw)
        if amx.quantizers(gm):
            amx.calibrate(gm, [x], progress=False)
    return gm.eval()


def test_transformer_encoder_parts_are_named_layers_and_model_untouched() -> None:
    torch.manual_seed(2)
    model = Encoder().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 5, 16)
    gm = _convert(model, amx.Spec().set_global(EXACT), x)
    names = [(r.name, r.op) for r in amx.layers(gm)]
    expected = []
    for i in range(2):
        expected += [
            (f"encoder.layers.{i}.self_attn.{p}", "matmul" if p in ("qk", "av") else "linear")
            for p in PARTS
        ]
        expected += [
            (f"encoder.layers.{i}.linear1", "linear"),
            (f"encoder.layers.{i}.linear2", "linear"),
        ]
    assert names == expected + [("head", "linear")]
    macs = {r.name: r.macs for r in amx.layers(gm)}
    assert macs["encoder.layers.0.self_attn.qk"] == 2 * 4 * 5 * 5 * 4  # N*H*L*S*head_dim
    assert macs["encoder.layers.0.self_attn.q_proj"] == 2 * 5 * 16 * 16
    assert isinstance(model.encoder.layers[0].self_attn, nn.MultiheadAttention)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_exact_transformer_equals_fake_quantized_float_and_approx_differs() -> None:
    torch.manual_seed(3)
    model = Encoder(layers=1).eval()
    x = torch.randn(2, 5, 16)
    gm = _convert(model, amx.Spec().set_global(EXACT), x)
    out, ref = gm(x), fake_quant_forward(gm, x)
    rel = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
    assert rel <= 1e-4
    assert F.cosine_similarity(out.flatten(), model(x).flatten(), dim=0) > 0.99
    approx = _convert(model, amx.Spec().set_global(_approx_multiplier()), x, gradient="ste")
    out, ref = approx(x), fake_quant_forward(approx, x)
    assert ((out.double() - ref.double()).norm() / ref.double().norm()).item() > 1e-3


def test_attention_parts_assignable_separately() -> None:
    torch.manual_seed(4)
    model, x = Encoder().eval(), torch.randn(2, 5, 16)
    spec = (
        amx.Spec()
        .set_global(EXACT)
        .set_module_name_regex(r"encoder\.layers\..*\.self_attn\.qk", None)
        .set_module_name("encoder.layers.1.self_attn.av", None)
        .set_module_name("encoder.layers.0.self_attn.out_proj", "mul7u_exact")
    )
    recs = {r.name: r for r in amx.layers(_convert(model, spec, x))}
    assert recs["encoder.layers.0.self_attn.qk"].multiplier is None
    assert recs["encoder.layers.1.self_attn.qk"].multiplier is None
    assert recs["encoder.layers.1.self_attn.av"].multiplier is None
    assert recs["encoder.layers.0.self_attn.av"].multiplier_name == "mul8u_exact"
    assert recs["encoder.layers.0.self_attn.out_proj"].multiplier_name == "mul7u_exact"
    off = amx.Spec().set_global(EXACT).set_module_name("encoder.layers.0.self_attn", None)
    recs = {r.name: r for r in amx.layers(_convert(model, off, x))}
    assert [p for p in PARTS if recs[f"encoder.layers.0.self_attn.{p}"].approximate] == []
    assert all(recs[f"encoder.layers.1.self_attn.{p}"].approximate for p in PARTS)


def test_backward_reaches_every_attention_weight() -> None:
    torch.manual_seed(5)
    model, x = Encoder(layers=1), torch.randn(2, 5, 16)
    gm = _convert(model, amx.Spec().set_global(EXACT), x, gradient="lut")
    gm.train()
    gm(x).square().sum().backward()
    missing = [n for n, p in gm.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_leaf_multihead_attention_is_kept() -> None:
    model, x = Encoder(layers=1).eval(), torch.randn(2, 5, 16)
    gm = _convert(model, amx.Spec().set_global(EXACT), x, leaf_modules=[nn.MultiheadAttention])
    assert isinstance(gm.get_submodule("encoder.layers.0.self_attn"), nn.MultiheadAttention)
    assert not any(
        r.name.startswith("encoder.layers.0.self_attn") and r.approximate for r in amx.layers(gm)
    )


class Sdpa(nn.Module):
    def __init__(self, causal: bool, mask: torch.Tensor | None, scale: float | None) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.causal, self.mask, self.scale = causal, mask, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, 2, 4)).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=self.mask, is_causal=self.causal, scale=self.scale
        )


@pytest.mark.parametrize(
    ("causal", "mask", "scale"),
    [
        (False, None, None),
        (True, None, 0.3),
        (False, torch.rand(5, 5) > 0.3, None),
        (False, torch.randn(5, 5), None),
    ],
)
def test_sdpa_is_decomposed_exactly(
    causal: bool, mask: torch.Tensor | None, scale: float | None
) -> None:
    torch.manual_seed(6)
    if mask is not None and mask.dtype == torch.bool:
        mask[:, 0] = True
    model, x = Sdpa(causal, mask, scale).eval(), torch.randn(2, 5, 8)
    floaty = _convert(model, amx.Spec(), x)
    assert not any(n.target is F.scaled_dot_product_attention for n in floaty.graph.nodes)
    torch.testing.assert_close(floaty(x), model(x), atol=1e-6, rtol=1e-5)
    recs = amx.layers(_convert(model, amx.Spec().set_global(EXACT), x))
    assert [(r.name, r.op, r.macs) for r in recs] == [
        ("qkv", "linear", 2 * 5 * 8 * 24),
        ("scaled_dot_product_attention_qk", "matmul", 2 * 2 * 5 * 5 * 4),
        ("scaled_dot_product_attention_av", "matmul", 2 * 2 * 5 * 5 * 4),
    ]
    gm = _convert(model, amx.Spec().set_global(EXACT), x)
    out, ref = gm(x), fake_quant_forward(gm, x)
    assert ((out.double() - ref.double()).norm() / ref.double().norm()).item() <= 1e-4


@pytest.mark.parametrize(
    ("shift", "size"), [([0, 0], (7, 7)), ([3, 3], (14, 14)), ([3, 3], (9, 11))]
)
def test_swin_window_attention_twin_equals_torchvision(
    shift: list[int], size: tuple[int, int]
) -> None:
    from appmult_fx.passes.window_attention import ApproxShiftedWindowAttention
    from torchvision.models.swin_transformer import ShiftedWindowAttention

    torch.manual_seed(7)
    swa = ShiftedWindowAttention(32, [7, 7], shift, 4).eval()
    twin = ApproxShiftedWindowAttention(swa).eval()
    x = torch.randn(2, *size, 32)
    torch.testing.assert_close(twin(x), swa(x), atol=1e-6, rtol=1e-5)
    assert twin.qkv is swa.qkv and twin.proj is swa.proj  # same parameters
