"""What handing the CPU kernels only the table rows the activations reach saves.

    python bench/rows_in_use.py [--widths 7 6 5] [--threads 1] [--repeats 2]

For each ResNet-18 CIFAR GEMM shape and each ``b`` of ``--widths``, activation indices below
``2**b`` (random) and 8-bit weight indices, it times the compiled CPU kernels (forward, dA, dW)
with the whole 256-row table and with its leading ``2**b`` rows (what the ops pass since
``rows_in_use``), CPU clock, best of ``--repeats`` after a warm-up, and prints the speed-ups.
Widths 2..4 time the kernels alone: against these 8-bit weights the ops cut to 32 rows at least.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from appmult_fx.ops import kernels

SHAPES = [
    ("layer1", 16384, 576, 64),
    ("layer2", 4096, 1152, 128),
    ("layer3", 1024, 2304, 256),
    ("layer4", 256, 4608, 512),
]


def best_cpu_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Best process time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def speedups(
    backend: kernels.CPUBackend,
    operands: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    table: torch.Tensor,
    grad: torch.Tensor,
    rows: int,
    repeats: int,
) -> list[float]:
    """Whole-table / cut-table time of the forward, dA and dW kernels on ``operands``."""
    a, w, g = operands
    runs = [
        lambda t, _: backend.lut_bmm(a, w, t),
        lambda _, gt: backend.lut_bmm_grad_a(g, a, w, gt),
        lambda _, gt: backend.lut_bmm_grad_w(g, a, w, gt),
    ]
    return [
        best_cpu_seconds(lambda run=run: run(table, grad), repeats)
        / best_cpu_seconds(lambda run=run: run(table[:rows], grad[:rows]), repeats)
        for run in runs
    ]


def main() -> None:
    """Print a markdown table of full-table / cut-table time per shape, width and product."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[7, 6, 5], choices=range(2, 8))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    backend = kernels.backend_for(torch.device("cpu"))
    table = torch.randint(-30000, 30000, (256, 256), generator=gen, dtype=torch.int32)
    grad = torch.randn(256, 256, generator=gen)
    print("| shape (M, K, N) | b | forward | dA | dW |")
    print("|---|---|---|---|---|")
    for name, m, k, n in SHAPES:
        w = torch.randint(0, 256, (1, k, n), generator=gen, dtype=torch.uint8)
        g = torch.randn(1, m, n, generator=gen)
        for b in args.widths:
            a = torch.randint(0, 1 << b, (1, m, k), generator=gen, dtype=torch.uint8)
            ratios = speedups(backend, (a, w, g), table, grad, 1 << b, args.repeats)
            cells = " | ".join(f"{r:.2f}x" for r in ratios)
            print(f"| {name} ({m}, {k}, {n}) | {b} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
