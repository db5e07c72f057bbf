"""Quantizer modules that turn float tensors into integer codes for a multiplier.

Unsigned multipliers use the seed's asymmetric per-tensor scheme: ``x ~ s * (q + zp)`` with
``q`` in ``[0, 2**bits - 1]``, ``s = max((max - min) / qmax, eps)``, ``zp = round(min / s) <= 0``.
Signed multipliers use symmetric two's-complement codes: ``x ~ s * q`` with
``q`` in ``[-2**(bits-1), 2**(bits-1) - 1]``, ``s = max|x| / (2**(bits-1) - 1)``, ``zp = 0``.
The range always includes 0, so a zero input (e.g. padding) is represented exactly.
Rounding is straight-through: the gradient is ``1/s`` inside the range and 0 where clamped;
scale and zero point receive no gradient. Every quantizer returns ``(codes, scale, zero_point)``
with ``codes`` a float tensor holding integers.

Non-finite values are refused, never absorbed: a NaN or inf in an observed batch, in an
activation quantized in eval mode, or in the weights raises :class:`NonFiniteError` (in eager
mode; a ``torch.compile``-d graph skips the check), so one bad batch can neither poison the
running range for good nor turn into silently wrong codes. An empty batch is a no-op for the
observer and quantizes to an empty tensor.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from ..luts.indexing import operand_range
from . import dispatch, kernels

_EPS = float(torch.finfo(torch.float32).eps)


class NonFiniteError(ValueError):
    """A quantizer met NaN or inf values (they would poison its range or codes)."""


def check_finite(lo: Tensor, hi: Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` unless the range ``[lo, hi]`` (min and max of a tensor,
    which carry any NaN or inf in it) is finite; skipped while ``torch.compile`` traces."""
    if torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        raise NonFiniteError(
            f"{what} contains NaN or inf (range [{lo.min().item()}, {hi.max().item()}]); "
            "expected finite values: check the input data, or lower the learning rate if "
            "training diverged"
        )


def qparams(lo: Tensor, hi: Tensor, bits: int, signed: bool) -> tuple[Tensor, Tensor]:
    """Scale and zero point for the range ``[lo, hi]`` (tensors; per-channel if 1-D)."""
    lo = torch.clamp(lo.detach(), max=0.0)
    hi = torch.clamp(hi.detach(), min=0.0)
    qmin, qmax = operand_range(bits, signed)
    if signed:
        scale = torch.clamp(torch.maximum(-lo, hi) / qmax, min=_EPS)
        return scale, torch.zeros_like(scale)
    scale = torch.clamp((hi - lo) / qmax, min=_EPS)
    return scale, torch.round(lo / scale)


class _Quantize(torch.autograd.Function):
    """``round(clamp(x / scale - zero_point, qmin, qmax))`` with the straight-through gradient
    ``g / scale`` inside the range and 0 where clamped (the composite
    ``q + (round(q) - q).detach()`` gives the same values and gradients but makes six passes and
    five temporaries, and its backward three more passes: a visible share of a training step)."""

    @staticmethod
    def forward(
        ctx,  # noqa: ANN001
        x: Tensor,
        scale: Tensor,
        zero_point: Tensor,
        qmin: int,
        qmax: int,
        needs_grad: bool,
        refuse_nonfinite: str | None,
    ) -> Tensor:
        """The codes; keeps the clamp mask when ``needs_grad``. With ``refuse_nonfinite`` (what
        ``x`` is, for the message) a NaN or inf in ``x`` raises :class:`NonFiniteError` (in
        eager mode), found by the one-pass kernel's own read of ``x`` where it serves."""
        if _fused(x, scale, zero_point):
            q, outside, nonfinite = kernels.cpu_extension().quantize_forward(
                x, scale, zero_point, qmin, qmax, needs_grad
            )
            if nonfinite and refuse_nonfinite is not None:
                check_finite(*torch.aminmax(x), refuse_nonfinite)
            if needs_grad:
                ctx.save_for_backward(outside, scale)
            return q
        if refuse_nonfinite is not None and x.numel():
            check_finite(*torch.aminmax(x), refuse_nonfinite)
        # in place in eager mode (fewer temporaries); out of place while compiling: torch 2.11's
        # compiled autograd.Function otherwise loses the mask (all-zero gradients)
        in_place = not torch.compiler.is_compiling()
        v = x / scale
        v = v.sub_(zero_point) if in_place else v - zero_point
        if not needs_grad:  # no mask to keep: clamp in place too
            return v.clamp_(qmin, qmax).round_() if in_place else torch.round(v.clamp(qmin, qmax))
        q = v.clamp(qmin, qmax)
        ctx.save_for_backward(q != v, scale)
        return q.round_() if in_place else torch.round(q)

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: ANN001, ANN205
        """Straight-through gradient for ``x``; none for the other inputs."""
        outside, scale = ctx.saved_tensors
        if torch.compiler.is_compiling():
            return torch.where(outside, 0.0, g / scale), None, None, None, None, None, None
        # the kernel's result has no graph: the torch expression when a graph is being built
        if not torch.is_grad_enabled() and _fused(g, scale, scale) and outside.is_contiguous():
            dx = kernels.cpu_extension().quantize_backward(g, outside, scale)
            return dx, None, None, None, None, None, None
        return (g / scale).masked_fill_(outside, 0.0), None, None, None, None, None, None


def _fused(x: Tensor, scale: Tensor, zero_point: Tensor) -> bool:
    """Whether the one-pass CPU quantizer (``cuda/quantize_cpu.cpp``, bit-identical to the torch
    expression) serves ``x`` (:func:`.dispatch.one_pass_cpu`): float32 throughout, a scale and a
    zero point of the same size, one value or one per index of dimension 0, and no dimension
    that ``x`` lacks (which would widen the result)."""
    if not dispatch.one_pass_cpu(x) or x.dtype != torch.float32:
        return False
    if scale.numel() != zero_point.numel():
        return False
    per_channel = (x.shape[0],) + (1,) * (x.dim() - 1)
    return all(
        t.dtype == torch.float32
        and t.device.type == "cpu"
        and t.is_contiguous()
        and t.dim() <= x.dim()
        and (t.numel() == 1 or tuple(t.shape) == per_channel)
        for t in (scale, zero_point)
    )


def quantize(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    bits: int,
    signed: bool,
    refuse_nonfinite: str | None = None,
) -> Tensor:
    """Integer codes of ``x`` (float tensor), with straight-through rounding and clamp masks
    (the gradient reaches ``x`` only, ``1 / scale`` inside the range). With
    ``refuse_nonfinite`` (what ``x`` is, e.g. ``"an activation"``) a NaN or inf in ``x`` raises
    :class:`NonFiniteError` instead of being clamped into a code (eager mode)."""
    qmin, qmax = operand_range(bits, signed)
    needs_grad = x.requires_grad and torch.is_grad_enabled()
    return _Quantize.apply(
        x, scale.detach(), zero_point.detach(), qmin, qmax, needs_grad, refuse_nonfinite
    )


def eager_on_cpu(x: Tensor) -> bool:
    """Whether a data-dependent Python branch on ``x``'s quantizer state is free here (eager
    mode on the CPU: no graph to keep guard-free, no device to synchronise)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def _channel_view(t: Tensor, ndim: int) -> Tensor:
    return t.reshape((-1,) + (1,) * (ndim - 1)) if t.dim() == 1 else t


class ActivationQuantizer(nn.Module):
    """Observer + quantizer for an activation operand (moving-average min/max).

    In train mode each call updates the running range with momentum ``momentum`` (the first
    observed batch initialises it); in eval mode the running range is used. An uncalibrated
    quantizer in eval mode quantizes with the batch's own range and warns once.
    """

    def __init__(self, bits: int, signed: bool, momentum: float = 0.1) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.bits, self.signed, self.momentum = bits, signed, momentum
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))
        self._warned = False

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        """Fold the range of ``x`` into the running min/max (refuses NaN/inf; an empty ``x``
        changes nothing)."""
        if x.numel() == 0:
            return
        lo, hi = (v.float() for v in torch.aminmax(x.detach()))
        check_finite(lo, hi, "an observed activation batch")
        # the first observed batch initialises the range (branch-free for torch.compile)
        self.min_val.copy_(
            torch.where(self.initialized, torch.lerp(self.min_val, lo, self.momentum), lo)
        )
        self.max_val.copy_(
            torch.where(self.initialized, torch.lerp(self.max_val, hi, self.momentum), hi)
        )
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize ``x``; returns ``(codes, scale, zero_point)``."""
        if self.training:
            self.observe(x)
        elif not self._warned and not torch.compiler.is_compiling() and not bool(self.initialized):
            warnings.warn(
                "appmult-fx: activation quantizer used in eval mode before calibration; "
                "quantizing with each batch's own range (run amx.calibrate first)",
                stacklevel=2,
            )
            self._warned = True
        refuse = None
        if self.training:
            # observe() has just checked x and folded it in: no second pass over x
            lo, hi = self.min_val, self.max_val
        elif eager_on_cpu(x) and bool(self.initialized):
            # the calibrated range is used; the quantizer still refuses NaN/inf in x (in its
            # own read of x where the one-pass kernel serves)
            lo, hi, refuse = self.min_val, self.max_val, "an activation"
        else:
            # branch-free on tensor data, so torch.export / torch.compile trace it without guards
            xd = x.detach()
            if xd.numel() == 0:
                lo = hi = torch.zeros((), device=x.device)
            else:
                lo, hi = xd.min().float(), xd.max().float()
                check_finite(lo, hi, "an activation")
            lo = torch.where(self.initialized, self.min_val, lo)
            hi = torch.where(self.initialized, self.max_val, hi)
        scale, zp = qparams(lo, hi, self.bits, self.signed)
        return quantize(x, scale, zp, self.bits, self.signed, refuse), scale, zp

    def extra_repr(self) -> str:
        kind = "signed" if self.signed else "unsigned"
        return f"bits={self.bits}, {kind}, momentum={self.momentum}"


class WeightQuantizer(nn.Module):
    """Quantizer for a weight operand: the range of the current weights, per tensor or per
    output channel (dimension 0)."""

    def __init__(self, bits: int, signed: bool, per_channel: bool = False) -> None:
        super().__init__()
        self.bits, self.signed, self.per_channel = bits, signed, per_channel

    def forward(self, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize ``w``; returns ``(codes, scale, zero_point)`` (1-D scale if per channel)."""
        wd = w.detach()
        if self.per_channel:
            flat = wd.reshape(wd.shape[0], -1)
            lo, hi = (v.float() for v in torch.aminmax(flat, dim=1))
        else:
            lo, hi = (v.float() for v in torch.aminmax(wd))
        check_finite(lo, hi, "a weight tensor")
        scale, zp = qparams(lo, hi, self.bits, self.signed)
        codes = quantize(
            w, _channel_view(scale, w.dim()), _channel_view(zp, w.dim()), self.bits, self.signed
        )
        return codes, scale, zp

    def extra_repr(self) -> str:
        kind = "signed" if self.signed else "unsigned"
        return f"bits={self.bits}, {kind}, per_channel={self.per_channel}"
