"""Which implementation an ``appmult`` custom op runs, registered per device with torch.library.

Each op's body (``torch.library.custom_op``) is the pure-PyTorch reference: it serves every
device without a compiled kernel (CompositeExplicitAutograd). :func:`register_device_kernels`
registers the compiled kernels for ``"cpu"`` and ``"cuda"`` with ``op.register_kernel``; the
dispatcher then picks by the tensors' device, no Python selection per call.

The switch to the reference everywhere, ``APPMULT_FX_REFERENCE=1`` (any value but ``""`` and
``"0"``), is read once, at import, into :data:`REFERENCE_ONLY`; :func:`use_reference` changes
it later (tests, or a process that cannot build kernels).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.library import CustomOpDef

REFERENCE_ONLY = os.environ.get("APPMULT_FX_REFERENCE", "") not in ("", "0")


@dataclass(frozen=True)
class DeviceKernels:
    """An op, its reference and its compiled kernel per device type."""

    op: CustomOpDef
    reference: Callable
    kernels: tuple[tuple[str, Callable], ...]

    def install(self, reference_only: bool) -> None:
        """Register the compiled kernels, or the reference in their place."""
        for device, kernel in self.kernels:
            self.op.register_kernel(device)(self.reference if reference_only else kernel)


_REGISTERED: list[DeviceKernels] = []  # every op's entry, so use_reference can reinstall them


def register_device_kernels(op: CustomOpDef, reference: Callable, **kernels: Callable) -> None:
    """Register ``kernels`` (device type -> function with the op's signature) for ``op``; the
    reference in their place while :data:`REFERENCE_ONLY` holds."""
    entry = DeviceKernels(op, reference, tuple(kernels.items()))
    entry.install(REFERENCE_ONLY)
    _REGISTERED.append(entry)


def use_reference(flag: bool) -> bool:
    """Run every op on the reference (``True``) or on its compiled kernels where registered
    (``False``) from now on; returns the previous setting (to restore it)."""
    global REFERENCE_ONLY
    previous, REFERENCE_ONLY = REFERENCE_ONLY, bool(flag)
    for entry in _REGISTERED:
        entry.install(REFERENCE_ONLY)
    return previous


# Elements from which a one-pass CPU kernel beats the torch expression it replaces (its call
# costs a few microseconds more than one small torch op).
ONE_PASS_FROM = 1 << 12


def one_pass_cpu(x: torch.Tensor) -> bool:
    """Whether a one-pass CPU kernel of the compiled module (quantizer, rescale: bit-identical
    to the torch expressions they replace) may serve ``x``: compiled kernels in use, eager mode
    (no graph being traced, no ``torch.func`` transform), a large enough contiguous plain CPU
    tensor (no fake or subclass tensor but a parameter)."""
    return (
        not REFERENCE_ONLY
        and not torch.compiler.is_compiling()
        and type(x) in (torch.Tensor, torch.nn.Parameter)
        and not torch._C._functorch.is_functorch_wrapped_tensor(x)
        and x.device.type == "cpu"
        and x.numel() >= ONE_PASS_FROM
        and x.is_contiguous()
    )
