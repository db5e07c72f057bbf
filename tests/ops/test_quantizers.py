"""Quantizers: the seed's asymmetric scheme, symmetric signed codes, observers, STE."""

import pytest
import torch

from appmult_fx.ops.quantizers import ActivationQuantizer, WeightQuantizer, qparams, quantize


def test_unsigned_qparams_follow_the_seed() -> None:
    lo, hi = torch.tensor(-1.0), torch.tensor(3.0)
    scale, zp = qparams(lo, hi, 7, False)
    assert scale.item() == pytest.approx(4.0 / 127)
    assert zp.item() == round(-1.0 / (4.0 / 127))
    x = torch.linspace(-1, 3, 101)
    q = quantize(x, scale, zp, 7, False)
    assert q.min() >= 0 and q.max() <= 127 and torch.equal(q, q.round())
    assert torch.allclose(scale * (q + zp), x, atol=scale.item() / 2 + 1e-6)


def test_range_always_contains_zero() -> None:
    scale, zp = qparams(torch.tensor(2.0), torch.tensor(5.0), 8, False)
    assert zp.item() == 0  # min clamped to 0, so 0.0 maps to code 0 exactly
    scale, zp = qparams(torch.tensor(-5.0), torch.tensor(-2.0), 8, False)
    assert quantize(torch.tensor(0.0), scale, zp, 8, False).item() == -zp.item()


def test_signed_is_symmetric() -> None:
    scale, zp = qparams(torch.tensor(-2.0), torch.tensor(1.0), 8, True)
    assert zp.item() == 0 and scale.item() == pytest.approx(2.0 / 127)
    q = quantize(torch.tensor([-2.0, -1.0, 0.0, 1.0, 5.0]), scale, zp, 8, True)
    assert q.tolist() == [-127.0, round(-1 / scale.item()), 0.0, round(1 / scale.item()), 127.0]


def test_straight_through_gradient_with_clamp_mask() -> None:
    scale, zp = torch.tensor(0.5), torch.tensor(-2.0)
    x = torch.tensor([-5.0, -0.3, 0.7, 100.0], requires_grad=True)
    quantize(x, scale, zp, 4, False).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 2.0, 0.0]


def test_activation_observer_moving_average_and_modes() -> None:
    q = ActivationQuantizer(8, False, momentum=0.1)
    q.train()
    q(torch.tensor([0.0, 10.0]))
    assert (q.min_val.item(), q.max_val.item()) == (0.0, 10.0)
    q(torch.tensor([-10.0, 20.0]))
    assert q.min_val.item() == pytest.approx(-1.0) and q.max_val.item() == pytest.approx(11.0)
    q.eval()
    q(torch.tensor([-100.0, 100.0]))  # eval: no update
    assert q.max_val.item() == pytest.approx(11.0)
    codes, scale, zp = q(torch.tensor([11.0, 50.0]))
    assert codes.tolist() == [255.0, 255.0]


def test_uncalibrated_eval_warns_and_uses_batch_range() -> None:
    q = ActivationQuantizer(8, False).eval()
    with pytest.warns(UserWarning, match="calibrat"):
        codes, scale, _ = q(torch.tensor([0.0, 2.55]))
    assert scale.item() == pytest.approx(0.01) and codes.tolist() == [0.0, 255.0]
    assert not q.initialized


def test_weight_quantizer_per_channel() -> None:
    w = torch.tensor([[0.0, 1.0], [-4.0, 4.0]]).reshape(2, 2, 1, 1)
    codes, scale, zp = WeightQuantizer(8, True, per_channel=True)(w)
    assert scale.shape == (2,) and torch.allclose(scale, torch.tensor([1 / 127, 4 / 127]))
    assert codes[:, :, 0, 0].tolist() == [[0.0, 127.0], [-127.0, 127.0]]
    codes, scale, zp = WeightQuantizer(8, True)(w)
    assert scale.dim() == 0 and codes[0, 1, 0, 0].item() == round(1 / (4 / 127))


def test_bad_momentum() -> None:
    with pytest.raises(ValueError, match="momentum"):
        ActivationQuantizer(8, False, momentum=0.0)


@pytest.mark.parametrize(("bits", "signed", "per_channel"), [(4, False, False), (8, True, True)])
def test_quantize_matches_the_composite_straight_through_formula(bits, signed, per_channel) -> None:
    """Codes and gradients equal those of ``q + (round(q) - q).detach()`` with
    ``q = clamp(x / s - zp)``, written here independently, including clamped entries."""
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(6, 5, 3, generator=gen) * 2.0**bits / 8).requires_grad_()
    shape = (6, 1, 1) if per_channel else ()
    scale = torch.rand(shape, generator=gen) * 0.2 + 0.05
    zp = torch.zeros(shape) if signed else -torch.randint(0, 4, shape, generator=gen).float()
    qmin, qmax = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    weight = torch.randn(6, 5, 3, generator=gen)
    q = quantize(x, scale, zp, bits, signed)
    (q * weight).sum().backward()
    got_grad, x.grad = x.grad, None
    ref = torch.clamp(x / scale - zp, qmin, qmax)
    ref = ref + (torch.round(ref) - ref).detach()
    (ref * weight).sum().backward()
    assert torch.equal(q, ref) and torch.equal(got_grad, x.grad)
    assert (q == qmin).any() or (q == qmax).any()  # the clamp mask is exercised
    with torch.no_grad():
        assert torch.equal(quantize(x, scale, zp, bits, signed), ref)


@pytest.mark.parametrize(("bits", "signed", "per_channel"), [(4, False, True), (8, True, False)])
@pytest.mark.parametrize("threads", [1, 2])
def test_one_pass_cpu_quantizer_is_bit_identical_to_the_formula(
    extension_calls, bits, signed, per_channel, threads
) -> None:
    """The one-pass CPU kernel (large contiguous float32 tensors) gives the composite formula's
    codes and gradients bit for bit: -0.0 codes, ties rounded to even, clamped entries, zero
    points, per-channel runs split across threads; and it did serve both directions."""
    calls = extension_calls
    gen = torch.Generator().manual_seed(5)
    channels = 37
    shape = (channels, 3, 17, 19)  # 36 k elements: several parallel chunks, ragged channel runs
    scale_shape = (channels, 1, 1, 1) if per_channel else ()
    scale = 2.0 ** -torch.randint(3, 6, scale_shape, generator=gen).float()  # exact ties below
    zp = (
        torch.zeros(scale_shape)
        if signed
        else -torch.randint(0, 4, scale_shape, generator=gen).float()
    )
    qmin, qmax = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    steps = torch.randint(-2 * (1 << bits), 2 * (1 << bits), shape, generator=gen)
    x = ((steps / 2.0 + zp) * scale).requires_grad_()  # every other element a tie
    x.data[0, 0, 0, :4] = torch.tensor([-0.25, -0.0, 0.0, 0.4]) * scale.reshape(-1)[0]
    g = torch.randn(shape, generator=gen)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        q = quantize(x, scale, zp, bits, signed)
        q.backward(g)
    finally:
        torch.set_num_threads(previous)
    assert calls == ["quantize_forward", "quantize_backward"]
    v = x.detach() / scale - zp
    ref = torch.round(torch.clamp(v, qmin, qmax))
    ref_grad = torch.where(torch.clamp(v, qmin, qmax) != v, 0.0, g / scale)
    assert torch.equal(q.detach().view(torch.int32), ref.view(torch.int32))
    assert torch.equal(x.grad.view(torch.int32), ref_grad.view(torch.int32))
    assert bool(((ref == 0) & torch.signbit(ref)).any()) == signed  # -0.0 codes were compared
    assert bool((v == v.floor() + 0.5).any()) and bool((ref == qmax).any())


def test_one_pass_quantizer_leaves_other_broadcasts_and_graphs_to_torch(kernels_active) -> None:
    """A per-channel scale with a single zero point, a scale with more dimensions than ``x``,
    and a gradient taken with ``create_graph`` (forward-over-reverse jvp) give torch's own
    results: the kernel serves only what it computes exactly."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(64, 8, 3, 3, generator=gen) * 3
    for scale, zp in [
        (torch.rand(64, 1, 1, 1, generator=gen) + 0.1, torch.tensor(-2.0)),
        (torch.tensor(0.1), torch.full((64, 1, 1, 1), -1.0)),
        (torch.tensor([[[[[0.1]]]]]), torch.tensor([[[[[0.0]]]]])),
    ]:
        want = torch.round(torch.clamp(x / scale - zp, 0, 15))
        got = quantize(x, scale, zp, 4, False)
        assert got.shape == want.shape and torch.equal(got, want)
    scale = torch.tensor(0.05)

    def codes(t: torch.Tensor) -> torch.Tensor:
        return quantize(t, scale, torch.tensor(0.0), 8, True)

    tangent = torch.ones_like(x)
    _, jvp = torch.autograd.functional.jvp(codes, x, tangent)
    v = x / scale
    inside = torch.clamp(v, -128, 127) == v
    assert torch.equal(jvp, torch.where(inside, tangent / scale, 0.0))


def test_one_pass_quantizer_refuses_a_range_its_rounding_cannot_hold(kernels_active) -> None:
    """The kernel's round-half-even trick is exact below 2**22 only: a wider code range is
    refused, not rounded wrongly (the quantizers never ask for more than 8 bits)."""
    from appmult_fx.ops import kernels

    x, s, zp = torch.randn(5000), torch.tensor(1.0), torch.tensor(0.0)
    with pytest.raises(RuntimeError, match="code range"):
        kernels.cpu_extension().quantize_forward(x, s, zp, -(2.0**23), 2.0**23, False)
    q, _, nonfinite = kernels.cpu_extension().quantize_forward(x, s, zp, -128.0, 127.0, False)
    assert not nonfinite
    assert torch.equal(q, torch.round(torch.clamp(x, -128, 127)))
