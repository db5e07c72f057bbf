"""Gradient LUTs of an approximate multiplier: difference-based, straight-through, regression.

``grad_a[i][j]`` approximates d product / d first operand at table indices ``(i, j)``,
``grad_b[i][j]`` d product / d second operand. Methods:

* ``"difference"`` (the DATE 2025 paper's smoothing + central difference, half window ``w``):
  ``smooth_a[a][b] = mean(L[a-w .. a+w, b])`` (clipped to the table),
  ``grad_a[a][b] = (smooth_a[a+1][b] - smooth_a[a-1][b]) / 2`` for ``w+1 <= a <= N-2-w``;
  near the edges ``grad_a[a][b] = (max - min) / N`` of column ``b`` (``edge="column"``, the
  paper's formula, default; ``/ (N - 1)``, the mean slope, on axes of at most 16 values, where
  ``/ N`` understates the slope by ``1/N``: :func:`edge_steps`; for signed tables the secant
  ``(last - first)`` of the value-ordered line instead of ``max - min``, which keeps the sign
  of a falling line such as ``a * b`` with ``b < 0``) or of row ``b`` (``edge="row"``, which
  reproduces the seed's files; the two agree for symmetric multipliers). ``grad_b`` is the
  same over the second operand, with the edge rule taken from row ``a``.
* ``"ste"``: the exact product's gradient, ``grad_a = b``, ``grad_b = a``.
* ``"regression"``: a cheaper 1-D variant; ``grad_a[:, b]`` is the least-squares slope of column
  ``b`` against ``a`` (constant along ``a``), ``grad_b[a, :]`` the slope of row ``a``.

Operands are ordered by *value* (signed tables are re-ordered from index order first), so
windows and differences never wrap from +max to -min.

Windows are per axis: ``grad_a`` smooths along A (``2**bits_a`` rows) with half window
``w_a``, ``grad_b`` along B (``2**bits_b`` columns) with ``w_b``; ``window=w`` means
``w_a = w_b = w`` and ``window=(w_a, w_b)`` sets both. The default
(:func:`default_window_for`) gives each axis the window of its own width,
``default_window(bits_a)`` and ``default_window(bits_b)``, so ``grad_a`` of an 8x4 table is
smoothed exactly like ``grad_a`` of an 8x8 one (half window 16 over 256 rows) while ``grad_b``
gets the 4-bit window (1 over 16 columns); a square table gets ``default_window(n)`` on both
axes, as always. Provenance records ``window`` (``w_a``) and, only when it differs,
``window_b``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np
import torch

from .indexing import check_widths, operand_values
from .multiplier import Multiplier

Method = Literal["difference", "ste", "regression"]
Edge = Literal["column", "row"]
METHODS = ("difference", "ste", "regression")
EDGES = ("column", "row")
Window = int | tuple[int, int]  # one half window for both axes, or (w_a, w_b)
_GRADIENT_KEYS = ("edge", "window", "window_b", "gradient_step")  # what with_gradients records


def default_window(bits: int) -> int:
    """The half window used for built-ins: ``max(1, 2**(bits-4))`` (8 bits: 16, 4 bits: 1)."""
    return max(1, 2 ** (bits - 4))


def _window_mean(table: np.ndarray, w: int, axis: int) -> np.ndarray:
    """Mean over ``[i-w, i+w]`` (clipped) along ``axis``, rounded to float32.

    Sums of integer tables are exact in float64, and a float64 quotient rounded to float32 is
    the correctly rounded float32 quotient, so this equals a float32 ``mean`` (the seed's).
    """
    n = table.shape[axis]
    moved = np.moveaxis(table, axis, 0)
    csum = np.concatenate([np.zeros((1, moved.shape[1])), np.cumsum(moved, axis=0)])
    idx = np.arange(n)
    lo, hi = np.maximum(0, idx - w), np.minimum(n, idx + w + 1)
    mean = ((csum[hi] - csum[lo]) / (hi - lo)[:, None]).astype(np.float32)
    return np.moveaxis(mean, 0, axis)


# Axes of at most this many operand values (4 bits) take the edge slope over n - 1 steps.
NARROW_AXIS = 16


def edge_steps(n: int) -> int:
    """Divisor of the edge rule ``(max - min) / steps`` on an axis of ``n`` operand values: the
    paper's ``n``, or ``n - 1`` (the mean slope) on narrow axes, where ``/ n`` would understate
    every edge slope by ``1/n`` (25% on a 2-bit axis, which has no interior point at all)."""
    return n - 1 if n <= NARROW_AXIS else n


def _edge_slope(lines: np.ndarray, signed: bool) -> np.ndarray:
    """The edge rule's slope of each line (last axis in increasing operand order): the paper's
    spread ``(max - min) / steps``, or for signed tables the secant ``(last - first) / steps``,
    which keeps the sign (a line ``a * b`` with ``b < 0`` falls; its spread would say it rises)."""
    steps = edge_steps(lines.shape[-1])
    if signed:
        return (lines[..., -1] - lines[..., 0]) / steps
    return (lines.max(axis=-1) - lines.min(axis=-1)) / steps


def _difference_a(table: np.ndarray, w: int, edge: Edge, signed: bool) -> np.ndarray:
    """grad_a of a value-ordered table (rows = first operand)."""
    n = table.shape[0]
    smooth = _window_mean(table, w, axis=0)
    if edge == "column":
        spread = _edge_slope(table.T, signed)  # column b -> index [b]
    else:  # row b -> index [b] (seed's slip)
        spread = _edge_slope(table, signed)
    grad = np.broadcast_to(spread[None, :].astype(np.float32), table.shape).copy()
    inner = slice(w + 1, n - 1 - w)
    if w + 1 <= n - 2 - w:
        grad[inner, :] = (smooth[w + 2 : n - w, :] - smooth[w : n - 2 - w, :]) / np.float32(2)
    return grad


def _difference_b(table: np.ndarray, w: int, signed: bool) -> np.ndarray:
    """grad_b of a value-ordered table (columns = second operand); edge from row a."""
    n = table.shape[1]
    smooth = _window_mean(table, w, axis=1)
    spread = _edge_slope(table, signed)
    grad = np.broadcast_to(spread[:, None].astype(np.float32), table.shape).copy()
    if w + 1 <= n - 2 - w:
        grad[:, w + 1 : n - 1 - w] = (
            smooth[:, w + 2 : n - w] - smooth[:, w : n - 2 - w]
        ) / np.float32(2)
    return grad


def _regression(
    table: np.ndarray, values_a: np.ndarray, values_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    xa, xb = values_a - values_a.mean(), values_b - values_b.mean()
    slope_a = (xa[:, None] * table).sum(axis=0) / (xa * xa).sum()  # per column b
    slope_b = (table * xb[None, :]).sum(axis=1) / (xb * xb).sum()  # per row a
    shape = table.shape
    return np.broadcast_to(slope_a[None, :], shape), np.broadcast_to(slope_b[:, None], shape)


def gradient_tables(
    mult: Multiplier,
    window: Window | None = None,
    edge: Edge = "column",
    method: Method = "difference",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_a, grad_b)`` float32 tables of ``mult`` (see the module docstring)."""
    return table_gradients(mult.table.numpy(), mult.bits, mult.signed, window, edge, method)


def default_window_for(bits: int | tuple[int, int]) -> Window:
    """Default half window(s): :func:`default_window` of a square width (an int), or the
    per-axis pair ``(default_window(bits_a), default_window(bits_b))`` of a rectangular one."""
    bits_a, bits_b = check_widths(bits)
    if bits_a == bits_b:
        return default_window(bits_a)
    return default_window(bits_a), default_window(bits_b)


def axis_windows(window: Window | None, bits: int | tuple[int, int]) -> tuple[int, int]:
    """``(w_a, w_b)`` of a window argument: None (the default), one int, or a pair."""
    w = default_window_for(bits) if window is None else window
    pair = tuple(w) if isinstance(w, (tuple, list)) else (w, w)
    if len(pair) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in pair):
        raise ValueError(
            f"window must be a non-negative integer or a pair (w_a, w_b) of them, got {window!r}"
        )
    return pair[0], pair[1]


def window_provenance(window: Window | None, bits: int | tuple[int, int]) -> dict[str, int]:
    """Provenance entries of a window: ``window`` (A axis) and ``window_b`` if different."""
    w_a, w_b = axis_windows(window, bits)
    return {"window": w_a} if w_a == w_b else {"window": w_a, "window_b": w_b}


def table_gradients(
    table: np.ndarray,
    bits: int | tuple[int, int],
    signed: bool,
    window: Window | None = None,
    edge: Edge = "column",
    method: Method = "difference",
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gradient_tables` of a bare ``[2**bits_a, 2**bits_b]`` table in index order."""
    if method not in METHODS:
        raise ValueError(f"gradient method must be one of {METHODS}, got {method!r}")
    if edge not in EDGES:
        raise ValueError(f"edge must be one of {EDGES}, got {edge!r}")
    bits_a, bits_b = check_widths(bits)
    values_a = operand_values(bits_a, signed).numpy()
    values_b = operand_values(bits_b, signed).numpy()
    shape = (len(values_a), len(values_b))
    if method == "ste":
        va, vb = torch.from_numpy(values_a).float(), torch.from_numpy(values_b).float()
        return vb[None, :].expand(shape).contiguous(), va[:, None].expand(shape).contiguous()
    if edge == "row" and bits_a != bits_b:
        raise ValueError(
            f"edge='row' (the seed's square-table rule) needs a square table, got "
            f"{bits_a}x{bits_b} bits; use edge='column'"
        )
    order_a = np.argsort(values_a, kind="stable")  # index order -> value order
    order_b = np.argsort(values_b, kind="stable")
    ordered = np.asarray(table, dtype=np.float64)[np.ix_(order_a, order_b)]
    if method == "regression":
        ga, gb = _regression(
            ordered, values_a[order_a].astype(np.float64), values_b[order_b].astype(np.float64)
        )
    else:
        w_a, w_b = axis_windows(window, bits)
        ga, gb = _difference_a(ordered, w_a, edge, signed), _difference_b(ordered, w_b, signed)
    back = np.ix_(np.argsort(order_a), np.argsort(order_b))  # value order -> index order
    return (
        torch.from_numpy(np.ascontiguousarray(ga[back], dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(gb[back], dtype=np.float32)),
    )


def with_gradients(
    mult: Multiplier,
    window: Window | None = None,
    edge: Edge = "column",
    method: Method = "difference",
    step: float | None = None,
) -> Multiplier:
    """A copy of ``mult`` with gradient LUTs; ``step`` rounds them (seed files: ``1/16``).

    ``window`` is the half window of the difference method, one int for both axes or a pair
    ``(w_a, w_b)`` (default :func:`default_window_for`: each axis its own width's window); it
    is ignored by ``"ste"`` and ``"regression"``.
    """
    grad_a, grad_b = gradient_tables(mult, window, edge, method)
    if step is not None:
        if not step > 0:
            raise ValueError(f"step must be positive, got {step!r}")
        grad_a, grad_b = torch.round(grad_a / step) * step, torch.round(grad_b / step) * step
    info: dict[str, object] = {"gradient_method": method}
    if method == "difference":
        info.update(edge=edge, **window_provenance(window, mult.bits))
    if step is not None:
        info["gradient_step"] = step
    kept = {k: v for k, v in mult.provenance.items() if k not in _GRADIENT_KEYS}  # none stale
    return replace(mult, provenance=kept).with_gradient_tables(grad_a, grad_b, **info)
