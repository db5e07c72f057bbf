"""Which graph nodes are multiply layers: module classes and functions, with their op kinds.

``MODULE_OPS`` / ``FUNCTION_OPS`` map a module class or a function to the op kind the rewrite
knows how to build (``conv1d``, ``conv2d``, ``linear``, ...). Spec object types are these keys;
in spec files they are written as strings (``"Conv2d"``, ``"nn.Linear"``, ``"F.conv2d"``).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .matmul_module import Matmul

MODULE_OPS: dict[type, str] = {
    nn.Conv1d: "conv1d",
    nn.Conv2d: "conv2d",
    nn.Linear: "linear",
    nn.Conv3d: "conv3d",
    nn.ConvTranspose1d: "conv_transpose1d",
    nn.ConvTranspose2d: "conv_transpose2d",
    nn.ConvTranspose3d: "conv_transpose3d",
    Matmul: "matmul",
}

FUNCTION_OPS: dict[Any, str] = {
    F.conv1d: "conv1d",
    torch.conv1d: "conv1d",
    F.conv2d: "conv2d",
    torch.conv2d: "conv2d",
    F.linear: "linear",
    F.conv3d: "conv3d",
    F.conv_transpose1d: "conv_transpose1d",
    F.conv_transpose2d: "conv_transpose2d",
    F.conv_transpose3d: "conv_transpose3d",
    torch.matmul: "matmul",
    torch.mm: "matmul",
    torch.mv: "matmul",
    torch.dot: "matmul",
    torch.bmm: "bmm",
    torch.baddbmm: "baddbmm",
    torch.addmm: "addmm",
    torch.einsum: "einsum",
}

# Other spellings of the same multiply, matched as the function they stand for: ``a @ b``
# and tensor methods (``a.matmul(b)``, ``a.mm(b)``, ``a.bmm(b)``, ``x.baddbmm(a, b)``, ...).
FUNCTION_SPELLINGS: dict[object, object] = {
    operator.matmul: torch.matmul,
    torch.linalg.matmul: torch.matmul,
    "matmul": torch.matmul,
    "mm": torch.mm,
    "mv": torch.mv,
    "dot": torch.dot,
    "bmm": torch.bmm,
    "baddbmm": torch.baddbmm,
    "addmm": torch.addmm,
}

# Multiplies the rewrite cannot build (and einsums that are no batched matmul, found in
# match.py): they stay float, with a warning and a float record, so none passes unseen.
UNCONVERTED_MODULES: dict[type, str] = {
    nn.Bilinear: "bilinear",
    nn.RNN: "rnn",
    nn.LSTM: "lstm",
    nn.GRU: "gru",
    nn.RNNCell: "rnn_cell",
    nn.LSTMCell: "lstm_cell",
    nn.GRUCell: "gru_cell",
}
UNCONVERTED_FUNCTIONS: dict[Any, str] = {
    torch.bilinear: "bilinear",  # F.bilinear is torch.bilinear
    torch.outer: "outer",  # torch.ger is torch.outer
    torch.addr: "addr",
    torch.linalg.vecdot: "vecdot",
    torch.convolution: "convolution",
    torch.Tensor.addmm_: "addmm_",  # in place: converting it as addmm would drop the write
    torch.Tensor.baddbmm_: "baddbmm_",
    torch.Tensor.addbmm_: "addbmm_",
    torch.Tensor.addmv_: "addmv_",
    torch.Tensor.addr_: "addr_",
    torch.addmv: "addmv",
    torch.addbmm: "addbmm",
    torch.inner: "inner",
    torch.vdot: "vdot",
    torch.tensordot: "tensordot",
    torch.chain_matmul: "chain_matmul",
    torch.linalg.multi_dot: "multi_dot",
}
UNCONVERTED_SPELLINGS: dict[str, Any] = {
    "outer": torch.outer,
    "ger": torch.outer,
    "addr": torch.addr,
    "addmm_": torch.Tensor.addmm_,
    "baddbmm_": torch.Tensor.baddbmm_,
    "addbmm_": torch.Tensor.addbmm_,
    "addmv_": torch.Tensor.addmv_,
    "addr_": torch.Tensor.addr_,
    "addmv": torch.addmv,
    "addbmm": torch.addbmm,
    "inner": torch.inner,
    "vdot": torch.vdot,
}


def unconverted_module_op(module: nn.Module) -> str | None:
    """The op kind of a multiply module the rewrite cannot build (its class or a base)."""
    for cls in type(module).__mro__:
        if cls in UNCONVERTED_MODULES:
            return UNCONVERTED_MODULES[cls]
    return None


# Methods through which a layer module computes; a subclass that defines one (on its class or
# its instance) computes its own way, which converting it as its registered class would drop.
COMPUTE_METHODS = ("forward", "_conv_forward", "__call__", "_call_impl")


def overrides_computation(module: nn.Module) -> bool:
    """Whether a subclass of a registered layer class defines one of :data:`COMPUTE_METHODS`
    between itself and that class, or on the instance (a weight-standardised ``Conv2d``)."""
    found = module_op(module)
    if found is None:
        return False
    mro = type(module).__mro__
    defined = [vars(cls) for cls in mro[: mro.index(found[0])]] + [vars(module)]
    return any(name in where for where in defined for name in COMPUTE_METHODS)


def module_op(module: nn.Module) -> tuple[type, str] | None:
    """``(registered class, op kind)`` for a multiply module (its class or a base), else None."""
    for cls in type(module).__mro__:
        if cls in MODULE_OPS:
            return cls, MODULE_OPS[cls]
    return None


def _aliases() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cls in MODULE_OPS:
        for name in (cls.__name__, f"nn.{cls.__name__}", f"torch.nn.{cls.__name__}"):
            out[name] = cls
    for fn in FUNCTION_OPS:
        name = fn.__name__
        module = "F" if getattr(F, name, None) is fn else getattr(fn, "__module__", None) or "torch"
        for alias in (f"{module}.{name}", f"torch.nn.functional.{name}" if module == "F" else None):
            if alias:
                out.setdefault(alias, fn)
        if getattr(torch, name, None) is fn:
            out.setdefault(f"torch.{name}", fn)
    return out


def canonical_object_type(object_type: Any) -> Any:
    """The module class or function a spec object type (object or string) refers to."""
    if isinstance(object_type, str):
        aliases = _aliases()
        if object_type not in aliases:
            raise ValueError(
                f"unknown object type {object_type!r}; known: {', '.join(sorted(aliases))}"
            )
        return aliases[object_type]
    if object_type in MODULE_OPS or object_type in FUNCTION_OPS:
        return object_type
    raise ValueError(
        f"unsupported object type {object_type!r}; supported module classes: "
        f"{[c.__name__ for c in MODULE_OPS]}, "
        f"functions: {sorted({f.__name__ for f in FUNCTION_OPS})}"
    )


def object_type_name(object_type: Any) -> str:
    """The spec-file string for a canonical object type."""
    if isinstance(object_type, type):
        return f"nn.{object_type.__name__}"
    return (
        f"F.{object_type.__name__}"
        if getattr(F, object_type.__name__, None) is object_type
        else f"torch.{object_type.__name__}"
    )
