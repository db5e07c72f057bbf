"""Input checks for code that ``torch.compile`` traces (the layer functions of the graph).

``torch._check(cond, lambda: f"...{x}...")`` is the house style, but Dynamo up to torch 2.11
cannot trace a message lambda that captures variables (``Unsupported: ... closure variables``),
so a converted model would not compile with ``fullgraph=True`` there. :func:`check` keeps the
message and traces on every supported torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def check(cond: bool | torch.SymBool, message: Callable[[], str]) -> None:
    """Raise ``RuntimeError(message())`` unless ``cond`` (like ``torch._check``).

    A plain ``bool`` (static shapes; also while tracing) is tested in Python, so the message is
    built only on failure; a symbolic ``cond`` (dynamic shapes) goes to ``torch._check``, with
    its message outside compiled code."""
    if isinstance(cond, bool):
        if not cond:
            raise RuntimeError(message())
    elif torch.compiler.is_compiling():
        torch._check(cond)
    else:
        torch._check(cond, message)


def float32_message(a: torch.Tensor, b: torch.Tensor) -> str:
    """The error for LUT-GEMM operands that are not float32, with the way out."""
    return (
        f"appmult-fx converted layers compute in float32, got {a.dtype} and {b.dtype} "
        "operands: keep the converted model in float32 (no .double(), .half() or "
        ".to(torch.float64) on it) and give it float32 inputs (x.float(); cast the output "
        "back if needed)"
    )
