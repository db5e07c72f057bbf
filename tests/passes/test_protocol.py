"""The rewrite protocol on small hand-built graphs: match, assign, operands, rewrite, parts."""

import operator

import pytest
import torch
import torch.nn.functional as F
from appmult_fx.passes.assign import assign
from appmult_fx.passes.match import find_layers
from appmult_fx.passes.operands import conv_args, linear_args, pad_list
from appmult_fx.passes.records import META_KEY
from appmult_fx.passes.rewrite import rewrite
from appmult_fx.passes.spec import Rule, Spec
from torch import fx, nn

import appmult_fx as amx
from appmult_fx.ops.int_layers import lut_conv, lut_linear, lut_matmul, rescale
from appmult_fx.ops.quantizers import ActivationQuantizer, WeightQuantizer


def _graph() -> fx.GraphModule:
    """x -> conv (module) -> F.linear(kwargs) -> @ with itself -> einsum("ij->ji") (not a GEMM)."""
    root = nn.Module()
    root.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    root.w = nn.Parameter(torch.randn(4, 2 * 4 * 4) * 0.1)
    g = fx.Graph()
    x = g.placeholder("x")
    c = g.call_module("conv", (x,))
    flat = g.call_function(torch.flatten, (c, 1))
    w = g.get_attr("w")
    lin = g.call_function(F.linear, (), {"input": flat, "weight": w})
    mm = g.call_function(operator.matmul, (lin, g.call_method("t", (lin,))))
    out = g.call_function(torch.einsum, ("ij->ji", mm))
    g.output(out)
    return fx.GraphModule(root, g)


def _one_linear(n_in: int, n_out: int) -> fx.GraphModule:
    """x -> fc (an nn.Linear module), built node by node."""
    root = nn.Module()
    root.fc = nn.Linear(n_in, n_out)
    g = fx.Graph()
    g.output(g.call_module("fc", (g.placeholder("x"),)))
    return fx.GraphModule(root, g)


def test_match_finds_module_function_and_operator_layers_only() -> None:
    sites = find_layers(_graph())
    assert [(s.name, s.op) for s in sites] == [
        ("conv", "conv2d"),
        ("linear", "linear"),
        ("matmul", "matmul"),
    ]  # the one-operand einsum is not a product of two operands: left alone
    assert sites[0].module is not None and sites[1].module is None


def test_operands_read_keyword_and_positional_calls_alike() -> None:
    gm = _graph()
    conv, lin, _ = find_layers(gm)
    a = conv_args(conv)
    assert (a["weight"], a["bias"], a["stride"], a["dilation"], a["groups"]) == (
        "conv.weight",
        None,
        (1, 1),
        (1, 1),
        1,
    )
    assert pad_list(a["padding"], a["kernel"], a["dilation"]) == [1, 1, 1, 1]
    assert pad_list("same", (4, 3), (1, 2)) == [2, 2, 1, 2]  # last dim first, odd total right
    b = linear_args(lin)
    assert b["input"].name == "flatten" and b["weight"].name == "w" and b["bias"] is None


def test_assign_pairs_sites_with_rules_by_precedence_and_checks_names() -> None:
    gm = _graph()
    sites = find_layers(gm)
    spec = Spec().set_global("mul4u_exact").set_object_type(F.linear, None)
    spec.set_module_name("conv", "mul6u_exact")
    pairs = assign(gm, sites, spec)
    assert [None if r.multiplier is None else r.multiplier.name for _, r in pairs] == [
        "mul6u_exact",
        None,
        "mul4u_exact",
    ]
    with pytest.raises(ValueError, match="names no layer"):
        assign(gm, sites, Spec().set_module_name("nope", "mul4u_exact"))
    with pytest.warns(UserWarning, match="matches no layer"):
        assign(gm, sites, Spec().set_module_name_regex("^zzz", "mul4u_exact"))


def test_rewrite_stores_the_records_and_their_parts_name_real_pieces() -> None:
    gm = _graph()
    mult = amx.multiplier("mul6s_exact")
    rule = Rule(mult, gradient="ste", per_channel=True)
    sites = find_layers(gm)
    gm = rewrite(gm, [(s, rule) for s in sites])
    nodes = {n.name: n for n in gm.graph.nodes}
    records = [n.meta[META_KEY] for n in gm.graph.nodes if META_KEY in n.meta]
    assert [r.name for r in records] == ["conv", "linear", "matmul"]
    for record, fn in zip(records, (lut_conv, lut_linear, lut_matmul), strict=True):
        parts = record.parts
        assert nodes[parts.gemm].target is fn and nodes[parts.gemm].meta[META_KEY] is record
        assert nodes[parts.product].target is rescale
        assert record.nodes == [*parts.quantizers, parts.gemm]
        assert torch.equal(gm.get_buffer(parts.tables["table"]), mult.table)
        assert set(parts.tables) == {"table"}  # gradient="ste": no gradient tables
        assert (record.bits, record.signed, record.gradient, record.backward) == (
            6,
            True,
            "ste",
            None,
        )
    conv, linear, matmul = (r.parts for r in records)
    assert isinstance(gm.get_submodule(conv.quantizers[0]), ActivationQuantizer)
    assert gm.get_submodule(conv.quantizers[1]).per_channel
    assert isinstance(gm.get_submodule(linear.quantizers[1]), WeightQuantizer)
    assert nodes[conv.inputs[0]].target is F.pad  # the conv's padding became an explicit node
    assert nodes[conv.weight].target == "conv.weight" and conv.bias is None
    assert conv.geometry == {"stride": (1, 1), "dilation": (1, 1), "groups": 1}
    assert nodes[linear.weight].target == "w"
    assert all(isinstance(gm.get_submodule(q), ActivationQuantizer) for q in matmul.quantizers)
    assert matmul.inputs == ("linear_out", "t")  # the matmul reads the rewritten linear


def test_rewritten_graph_computes_the_quantized_layers() -> None:
    """With an exact multiplier the rewrite equals quantize -> float product -> dequantize,
    computed here from the observers' ranges by a harness of the test's own."""
    torch.manual_seed(0)
    gm = _one_linear(5, 3)
    weight, bias = gm.fc.weight.detach().clone(), gm.fc.bias.detach().clone()
    rule = Rule(amx.multiplier("mul8u_exact"), gradient="ste")
    gm = rewrite(gm, [(s, rule) for s in find_layers(gm)])
    x = torch.rand(4, 5)
    gm.train()
    gm(x)  # observers see x
    gm.eval()

    def real(t: torch.Tensor) -> torch.Tensor:  # quantize-dequantize over [min(t, 0), max(t, 0)]
        lo, hi = min(float(t.min()), 0.0), max(float(t.max()), 0.0)
        scale = (hi - lo) / 255
        zero = round(lo / scale)
        return (torch.clamp(t / scale - zero, 0, 255).round() + zero) * scale

    expected = real(x) @ real(weight).T + bias
    torch.testing.assert_close(gm(x), expected, rtol=1e-5, atol=1e-5)


def test_fp_records_keep_backward_apart_from_gradient() -> None:
    gm = _one_linear(4, 2)
    rule = Rule(amx.multiplier("fp_mbm7"), gradient="lut", backward="exact")
    gm = rewrite(gm, [(s, rule) for s in find_layers(gm)])
    (record,) = (n.meta[META_KEY] for n in gm.graph.nodes if META_KEY in n.meta)
    assert (record.gradient, record.backward, record.parts.quantizers) == (None, "exact", ())
    assert set(record.parts.tables) == {"mantissa_table"}


def test_lut_gradient_without_gradient_tables_is_refused() -> None:
    gm = _one_linear(4, 2)
    plain = amx.Multiplier("plain", 4, False, amx.multiplier("mul4u_exact").table)
    with pytest.raises(ValueError, match="no gradient LUTs; use gradient='ste'"):
        rewrite(gm, [(s, Rule(plain, gradient="lut")) for s in find_layers(gm)])
