"""The attack on observers: NaN/inf batches must be refused, never absorbed; empty batches work."""

import math

import pytest
import torch
from torch import nn

import appmult_fx as amx
from appmult_fx.ops.quantizers import ActivationQuantizer, NonFiniteError, WeightQuantizer


def _poisoned(value: float) -> torch.Tensor:
    x = torch.randn(4, 6)
    x[2, 3] = value
    return x


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_observer_refuses_a_poisoned_batch_and_keeps_its_range(value) -> None:
    q = ActivationQuantizer(8, False).train()
    q(torch.linspace(-1, 2, 24).reshape(4, 6))
    before = (q.min_val.clone(), q.max_val.clone())
    with pytest.raises(NonFiniteError, match="observed activation batch contains NaN or inf"):
        q(_poisoned(value))
    assert torch.equal(q.min_val, before[0]) and torch.equal(q.max_val, before[1])
    codes, scale, _ = q.eval()(torch.ones(2, 6))
    assert torch.isfinite(scale) and torch.isfinite(codes).all()


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_eval_quantizer_refuses_non_finite_activations(value) -> None:
    q = ActivationQuantizer(8, True)
    q.train()(torch.randn(8))
    with pytest.raises(NonFiniteError, match="activation contains NaN or inf"):
        q.eval()(_poisoned(value))


@pytest.mark.parametrize("threads", [1, 2])
def test_one_pass_kernel_reports_every_non_finite_input(kernels_active, threads) -> None:
    """The one-pass quantizer's own read of ``x`` reports NaN, inf and -inf wherever they sit
    (first, last, either side of the two threads' split, a channel-run boundary) and nothing for
    finite extremes (largest float, subnormals, -0.0); ground truth: ``torch.isfinite``."""
    from appmult_fx.ops import kernels

    ext = kernels.cpu_extension()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(37, 3, 17, 19, generator=gen)  # 36 k elements: several parallel chunks
    flat = x.view(-1)
    flat[:4] = torch.tensor(
        [
            torch.finfo(torch.float32).max,
            -torch.finfo(torch.float32).max,
            torch.finfo(torch.float32).smallest_normal / 4,
            -0.0,
        ]
    )
    scale, zp = torch.rand(37, 1, 1, 1, generator=gen) + 0.1, torch.zeros(37, 1, 1, 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert ext.quantize_forward(x, scale, zp, -128.0, 127.0, False)[2] is False
        for value in (math.nan, math.inf, -math.inf):
            half = (flat.numel() + 1) // 2
            for where in (0, 968, 969, half - 1, half, flat.numel() - 1):
                y = x.clone()
                y.view(-1)[where] = value
                for mask in (False, True):
                    got = ext.quantize_forward(y, scale, zp, -128.0, 127.0, mask)[2]
                    assert got is (not bool(torch.isfinite(y).all())) is True, (value, where)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("value", [math.nan, -math.inf])
def test_eval_quantizer_refuses_non_finite_in_the_kernels_own_read(
    extension_calls, monkeypatch, value
) -> None:
    """A calibrated quantizer in eval mode on a large activation finds NaN/inf in the one-pass
    kernel's read of ``x`` (no separate range pass: ``aminmax`` runs only to word the error)
    and refuses it with the usual message."""
    q = ActivationQuantizer(8, True)
    q.train()(torch.randn(8))
    q.eval()
    ranges, aminmax = [], torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: ranges.append(1) or aminmax(*a, **k))
    x = torch.randn(16, 64, 9, 9)
    codes, _, _ = q(x)
    assert extension_calls == ["quantize_forward"] and torch.isfinite(codes).all()
    assert ranges == []
    x[5, 7, 3, 2] = value
    with pytest.raises(NonFiniteError, match="activation contains NaN or inf"):
        q(x)
    assert ranges == [1]


def test_weight_quantizer_refuses_non_finite_weights() -> None:
    w = torch.randn(3, 4)
    w[1, 1] = math.nan
    for per_channel in (False, True):
        with pytest.raises(NonFiniteError, match="weight tensor contains NaN or inf"):
            WeightQuantizer(8, False, per_channel)(w)


def _converted() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    gm = amx.convert(model, amx.Spec().set_global("mul8u_trunc4"))
    return gm, torch.randn(8, 6)


def test_calibration_with_a_nan_batch_is_refused_and_does_not_poison() -> None:
    gm, x = _converted()
    amx.calibrate(gm, [x], progress=False)
    ranges = [(q.min_val.clone(), q.max_val.clone()) for q in amx.quantizers(gm)]
    with pytest.raises(NonFiniteError):
        amx.calibrate(gm, [x, _poisoned(math.nan)[:, :6]], progress=False)
    # the good batch before the bad one was folded in; nothing non-finite ever was
    for q in amx.quantizers(gm):
        assert torch.isfinite(q.min_val) and torch.isfinite(q.max_val)
    out = gm.eval()(x)
    assert torch.isfinite(out).all()
    assert len(ranges) == len(amx.quantizers(gm))


def test_training_step_with_an_inf_batch_is_refused_before_the_update() -> None:
    gm, x = _converted()
    gm.train()
    before = {k: v.clone() for k, v in gm.state_dict().items()}
    with pytest.raises(NonFiniteError):
        gm(_poisoned(math.inf)[:, :6]).sum().backward()
    for k, v in gm.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_empty_batch_through_calibration_forward_and_training() -> None:
    gm, x = _converted()
    empty = torch.empty(0, 6)
    amx.calibrate(gm, [empty, x, empty], progress=False)  # the empty batches change nothing
    ref, _ = _converted()
    amx.calibrate(ref, [x], progress=False)
    for a, b in zip(amx.quantizers(gm), amx.quantizers(ref), strict=True):
        assert torch.equal(a.min_val, b.min_val) and torch.equal(a.max_val, b.max_val)
    out = gm.eval()(empty)
    assert out.shape == (0, 3)
    gm.train()
    opt = torch.optim.SGD(gm.parameters(), lr=0.1)
    loss = gm(empty).sum()
    loss.backward()
    opt.step()
    assert loss.item() == 0.0
    assert all(torch.isfinite(p).all() for p in gm.parameters())
    uncalibrated, _ = _converted()
    assert uncalibrated.eval()(empty).shape == (0, 3)
