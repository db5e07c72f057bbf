"""convert() on real models, the GraphModule's properties, calibrate(), errors, retraining."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import appmult_fx as amx

SEED_LUT = "appmults/resub_als/Mult_7_7_MED_63.6771_size_178_depth_23_lutfp+bp_avg_8_8.txt"


def _count(gm, approximate=True):
    return sum(r.approximate == approximate for r in amx.layers(gm))


def test_resnet18_issue_example() -> None:
    model = torchvision.models.resnet18(num_classes=10)
    before = copy.deepcopy(model.state_dict())
    spec = amx.Spec().set_global("mul7u_exact").set_module_name("fc", None)
    gm = amx.convert(model, spec, gradient="lut", example_inputs=torch.randn(1, 3, 32, 32))
    assert _count(gm) == 20 and _count(gm, approximate=False) == 1
    assert all(
        torch.equal(v, model.state_dict()[k]) for k, v in before.items()
    )  # original untouched
    assert not any("quant" in n for n, _ in model.named_modules())
    recs = {r.name: r for r in amx.layers(gm)}
    assert recs["conv1"].macs == 64 * 16 * 16 * 3 * 49 and recs["fc"].macs == 512 * 10
    assert recs["layer1.0.conv1"].bits == 7 and recs["layer1.0.conv1"].gradient == "lut"
    # the rewrite is visible in the code and the tables are stored once, as buffers
    assert "conv1_input_quant" in gm.code and "lut_conv" in gm.code
    lut_buffers = [n for n, _ in gm.appmult_luts.named_buffers()]
    assert len(lut_buffers) == 3  # one multiplier: table + two gradient tables
    # state_dict keeps the original parameter names
    assert "layer1.0.conv1.weight" in gm.state_dict()


def test_mobilenet_v2_depthwise_and_grouped() -> None:
    model = torchvision.models.mobilenet_v2(num_classes=10)
    gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"))
    assert _count(gm) == 52 + 1
    depthwise = [
        r
        for r in amx.layers(gm)
        if r.op == "conv2d" and ".conv.0.0" in r.name and r.name != "features.1.conv.0.0"
    ]
    assert depthwise  # depthwise convs are rewritten too
    gm.eval()
    with pytest.warns(UserWarning, match="calibrat"):
        y = gm(torch.randn(1, 3, 32, 32))
    assert y.shape == (1, 10)


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(4, 1, 3, 3) * 0.3)
        self.w2 = nn.Parameter(torch.randn(5, 4 * 4) * 0.3)
        self.b2 = nn.Parameter(torch.zeros(5))

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.w1, padding=1, stride=2))
        x = F.adaptive_avg_pool2d(x, 2).flatten(1)
        return F.linear(x, self.w2, self.b2)


def test_functional_conv_and_linear() -> None:
    model = Functional()
    x = torch.randn(3, 1, 8, 8)
    gm = amx.convert(model, amx.Spec().set_global("mul8s_exact"), example_inputs=x)
    assert [(r.name, r.op) for r in amx.layers(gm)] == [("conv2d", "conv2d"), ("linear", "linear")]
    amx.calibrate(gm, [x], progress=False)
    gm.eval()
    y, ref = gm(x), model(x)
    assert torch.nn.functional.cosine_similarity(y.flatten(), ref.flatten(), dim=0) > 0.99


def test_graphmodule_copies_moves_and_saves(tmp_path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 6 * 6, 2))
    gm = amx.convert(model, amx.Spec().set_global("mul6u_exact"))
    x = torch.randn(2, 1, 8, 8)
    amx.calibrate(gm, [x], progress=False)
    gm.eval()
    y = gm(x)
    clone = copy.deepcopy(gm)
    assert torch.equal(clone(x), y) and len(amx.layers(clone)) == 2
    torch.save(gm.state_dict(), tmp_path / "sd.pt")
    fresh = amx.convert(model, amx.Spec().set_global("mul6u_exact")).eval()
    fresh.load_state_dict(torch.load(tmp_path / "sd.pt"))
    assert torch.equal(fresh(x), y)
    moved = copy.deepcopy(gm).to("meta")  # .to() moves the LUT tables with the model
    assert {b.device.type for b in moved.appmult_luts.buffers()} == {"meta"}


def test_calibrate_touches_only_observers() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Dropout(0.5), nn.Flatten(), nn.Linear(3 * 36, 2)
    )
    gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"))
    gm.train()
    bn = copy.deepcopy(gm.get_submodule("1").state_dict())
    weights = {k: v.clone() for k, v in gm.named_parameters()}
    amx.calibrate(gm, (torch.randn(4, 1, 8, 8) for _ in range(3)), progress=False)
    assert gm.training and all(m.training for m in gm.modules())
    assert all(torch.equal(v, bn[k]) for k, v in gm.get_submodule("1").state_dict().items())
    assert all(torch.equal(v, weights[k]) for k, v in gm.named_parameters())
    assert all(bool(q.initialized) for q in amx.quantizers(gm))
    gm.eval()
    amx.calibrate(gm, [torch.randn(4, 1, 8, 8)], progress=False)
    assert not any(m.training for m in gm.modules())
    with pytest.raises(ValueError, match="no batches"):
        amx.calibrate(gm, [], progress=False)
    with pytest.raises(ValueError, match="no activation quantizers"):
        amx.calibrate(model, [torch.randn(1, 1, 8, 8)], progress=False)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.conv(x)
        return self.conv(-x)


def test_trace_failure_names_the_module_and_leaf_modules_fix_it() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 1), Untraceable())
    with pytest.raises(amx.TraceFailure, match=r"(?s)'1' \(Untraceable\).*leaf_modules"):
        amx.convert(model, amx.Spec().set_global("mul8u_exact"))
    gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"), leaf_modules=["1"])
    # a leaf's inner multiplies are listed as float layers (issue 6: records cover all multiplies)
    assert [(r.name, r.approximate) for r in amx.layers(gm)] == [("0", True), ("1.conv", False)]
    gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"), leaf_modules=[Untraceable])
    assert [r.approximate for r in amx.layers(gm)] == [True, False]
    with pytest.raises(ValueError, match="not modules"):
        amx.convert(model, amx.Spec(), leaf_modules=["nope"])


def test_lut_gradient_needs_gradient_tables() -> None:
    plain = amx.multiplier("mul4u_exact")
    plain = amx.Multiplier("no_grads", 4, False, plain.table)
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="no gradient LUTs"):
        amx.convert(model, amx.Spec().set_global(plain), gradient="lut")
    gm = amx.convert(model, amx.Spec().set_global(plain), gradient="ste")
    assert amx.layers(gm)[0].gradient == "ste"
    with pytest.raises(ValueError, match="gradient must be"):
        amx.convert(model, amx.Spec(), gradient="exact")
    with pytest.raises(TypeError, match="Spec"):
        amx.convert(model, {"global": "mul8u_exact"})


def test_approximate_multiplier_is_really_used(shared) -> None:
    mult = amx.load_multiplier(shared / SEED_LUT)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 3))
    x = torch.rand(2, 1, 8, 8)
    outs = []
    for m in (mult, "mul7u_exact"):
        gm = amx.convert(model, amx.Spec().set_global(m))
        amx.calibrate(gm, [x], progress=False)
        outs.append(gm.eval()(x))
    assert not torch.allclose(outs[0], outs[1], atol=1e-3)


@pytest.mark.parametrize("gradient", ["lut", "ste"])
def test_converted_cnn_trains_on_digits(shared, gradient) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:512], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target[:512])
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 16, 10),
    )
    mult = amx.load_multiplier(shared / SEED_LUT)
    gm = amx.convert(model, amx.Spec().set_global(mult), gradient=gradient)
    amx.calibrate(gm, x.split(128), progress=False)
    opt = torch.optim.Adam(gm.parameters(), lr=1e-2)
    gm.train()
    losses = []
    for step in range(16):
        idx = torch.arange(step * 64, step * 64 + 64) % len(x)
        loss = F.cross_entropy(gm(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gm.parameters())
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3


def test_torch_export_and_compile_see_the_ops() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)
    )
    x = torch.rand(2, 1, 8, 8)
    gm = amx.convert(model, amx.Spec().set_global("mul7u_exact"))
    amx.calibrate(gm, [x], progress=False)
    gm.eval()
    ref = gm(x)
    ep = torch.export.export(gm, (x,))
    targets = [n.target for n in ep.graph.nodes]
    assert targets.count(torch.ops.appmult.approx_conv2d.default) == 1
    assert targets.count(torch.ops.appmult.approx_bmm.default) == 1
    assert torch.equal(ep.module()(x), ref)
    assert torch.equal(torch.compile(gm, fullgraph=True)(x), ref)
    gm.train()
    torch.compile(gm, fullgraph=True)(x).sum().backward()
    assert gm.get_submodule("0").weight.grad.abs().sum() > 0


class _MatmulNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        h = self.conv(x).flatten(2)  # [N, 4, 64]
        h = self.proj(h.reshape(x.shape[0], 32, 8))
        return torch.matmul(h, h.transpose(1, 2)).mean((1, 2))


@pytest.mark.parametrize("mult", ["mul7u_exact", "fp_mbm7"])
def test_torch_compile_fullgraph_with_matmul_and_fp(mult) -> None:
    x = torch.rand(2, 1, 8, 8)
    gm = amx.convert(_MatmulNet(), amx.Spec().set_global(mult))
    if amx.quantizers(gm):
        amx.calibrate(gm, [x], progress=False)
    gm.eval()
    # inductor may reorder the float rescale arithmetic: equal up to float rounding
    torch.testing.assert_close(torch.compile(gm, fullgraph=True)(x), gm(x), rtol=1e-5, atol=1e-6)


def test_converting_a_converted_model_is_refused_with_advice_that_works() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"), gradient="ste")
    with torch.no_grad():
        gm.get_parameter("0.weight").add_(1.0)  # "retrained"
    for converted in (gm, nn.Sequential(gm)):
        with pytest.raises(ValueError, match="already converted.*amx.convert\\(float_model"):
            amx.convert(converted, amx.Spec().set_global("mul8u_trunc4"))
    # the advice: carry the weights over to the float model, then convert it again
    model.load_state_dict(gm.state_dict(), strict=False)
    again = amx.convert(model, amx.Spec().set_global("mul8u_trunc4"), gradient="ste")
    assert torch.equal(again.get_parameter("0.weight"), gm.get_parameter("0.weight"))
    assert {r.multiplier.name for r in amx.layers(again)} == {"mul8u_trunc4"}
