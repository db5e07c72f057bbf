"""Why rectangular built-ins smooth each axis with its own window: grad_a of every 8x4
approximate built-in with the A-axis window (16, the default) against the narrower operand's
window (1), measured as the mean distance to the exact slope ``b`` and the mean step between
neighbouring rows (roughness), both over the interior rows (edges excluded).

Run: ``python bench/gradient_windows.py [--bits 8x4]``.
"""

from __future__ import annotations

import argparse

import numpy as np
from appmult_fx.luts.gradients import default_window, with_gradients
from appmult_fx.luts.indexing import operand_values
from appmult_fx.luts.registry import builtin_names, multiplier


def grad_a_quality(name: str, w_a: int) -> tuple[float, float]:
    """(mean |grad_a - b|, mean |grad_a[a+1] - grad_a[a]|) over interior rows, value order."""
    m = multiplier(name)
    va = operand_values(m.bits_a, m.signed).numpy()
    vb = operand_values(m.bits_b, m.signed).numpy().astype(float)
    w_b = default_window(m.bits_b)
    grad = with_gradients(m, window=(w_a, w_b)).grad_a.numpy()[np.argsort(va)]
    inner = slice(max(w_a, 16) + 1, len(va) - max(w_a, 16) - 1)
    deviation = np.abs(grad[inner] - vb[None, :]).mean()
    roughness = np.abs(np.diff(grad[inner], axis=0)).mean()
    return float(deviation), float(roughness)


def main() -> None:
    """Print the table for one width pair."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", default="8x4", help="AxB widths (default 8x4)")
    a, b = (int(x) for x in parser.parse_args().bits.split("x"))
    if a <= b:
        parser.error(f"--bits {a}x{b}: the study compares A-axis windows, so A must be the wider")
    own, narrow = default_window(a), default_window(min(a, b))
    names = [n for n in builtin_names((a, b)) if not n.endswith("_exact")]
    columns = (f"dev w={own}", f"rough w={own}", f"dev w={narrow}", f"rough w={narrow}")
    print(f"{'name':<18}" + "".join(f"{c:>13}" for c in columns))
    rows = np.array([[*grad_a_quality(n, own), *grad_a_quality(n, narrow)] for n in names])
    for name, row in zip(names, rows, strict=True):
        print(f"{name:<18}" + "".join(f"{x:>13.3f}" for x in row))
    print(f"{'mean':<18}" + "".join(f"{x:>13.3f}" for x in rows.mean(axis=0)))


if __name__ == "__main__":
    main()
