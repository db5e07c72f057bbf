"""Cost of the "nothing silently wrong" guards, as ratios measured in the same run.

    python bench/exactness_overhead.py [--threads N] [--repeats R]

1. Exact accumulation: ``lut_sum`` (bound check + int32 kernel + int64 result) against the raw
   int32 kernel (each followed by the float32 conversion the ops do) on ResNet-20 CIFAR-sized
   layers, and the split-K path (K past the int32 bound) against one kernel call over the same K.
2. Exact resume: the per-step commit (a copy of model + optimizer state) against one training
   step of a converted ResNet-20 (batch 32, 32x32 inputs, STE gradients).
3. Index range: the ops' scan that refuses indices past a table's rows / columns
   (``check_index_range``, only for a side below 256 entries) against the whole op call, 8x4,
   4x8 and 7x7 tables on ResNet-18 CIFAR shapes (forward and the activation-gradient product).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import appmult_fx as amx
from appmult_fx.app.models import resnet20
from appmult_fx.ops import kernels
from appmult_fx.ops.lut_gemm import check_index_range, lut_bmm, lut_bmm_grad_a, lut_sum

SHAPES = [("layer1", 32 * 32 * 32, 144, 16), ("layer3", 32 * 8 * 8, 576, 64)]


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def accumulation(repeats: int) -> None:
    raw_kernel = kernels.backend_for(torch.device("cpu")).lut_bmm
    table = amx.multiplier("mul8u_trunc4").table
    for name, m, k, n in SHAPES:
        a = torch.randint(0, 256, (1, m, k), dtype=torch.uint8)
        w = torch.randint(0, 256, (1, k, n), dtype=torch.uint8)
        raw = _median_s(lambda a=a, w=w: raw_kernel(a, w, table).float(), repeats)
        exact = _median_s(lambda a=a, w=w: lut_sum(a, w, table).float(), repeats)
        print(f"{name} M={m} K={k} N={n}: lut_sum / raw int32 kernel (+float) = {exact / raw:.3f}")
    big = table.clone()
    big[255, 255] = 2**30  # bound: 2 terms per int32 chunk
    a = torch.randint(0, 256, (1, 64, 64), dtype=torch.uint8)
    w = torch.randint(0, 256, (1, 64, 16), dtype=torch.uint8)
    one = _median_s(lambda: raw_kernel(a, w, big), repeats)
    split = _median_s(lambda: lut_sum(a, w, big), repeats)
    print(f"split-K at 2 terms per chunk, K=64: lut_sum / one kernel call = {split / one:.1f}")


def resume_commit(repeats: int) -> None:
    torch.manual_seed(0)
    gm = amx.convert(resnet20(), amx.Spec().set_global("mul8u_trunc4"), gradient="ste")
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    amx.calibrate(gm, [x], progress=False)
    gm.train()
    opt = torch.optim.Adam(gm.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(gm(x), y).backward()
        opt.step()

    def commit() -> None:
        copy.deepcopy({"model": gm.state_dict(), "optimizer": opt.state_dict()})

    t_step = _median_s(step, max(2, repeats // 5))
    t_commit = _median_s(commit, repeats)
    print(
        f"resnet20 batch 32: commit {1e3 * t_commit:.2f} ms / step {1e3 * t_step:.0f} ms = "
        f"{t_commit / t_step:.4f}"
    )


INDEX_SHAPES = [("layer1", 16384, 576, 64), ("layer3", 1024, 2304, 256), ("layer4", 256, 4608, 512)]


def index_range(repeats: int) -> None:
    for bits_a, bits_b in ((8, 4), (4, 8), (7, 7)):
        table = torch.randint(0, 100, (1 << bits_a, 1 << bits_b), dtype=torch.int32)
        gtab = torch.randn(1 << bits_a, 1 << bits_b)
        for name, m, k, n in INDEX_SHAPES:
            a = torch.randint(0, 1 << bits_a, (1, m, k), dtype=torch.uint8)
            w = torch.randint(0, 1 << bits_b, (1, k, n), dtype=torch.uint8)
            g = torch.randn(1, m, n)
            scan = _median_s(lambda a=a, w=w, t=table: check_index_range(a, w, t), repeats)
            fwd = _median_s(lambda a=a, w=w, t=table: lut_bmm(a, w, t), repeats)
            da = _median_s(lambda a=a, w=w, g=g, t=gtab: lut_bmm_grad_a(g, a, w, t), repeats)
            print(
                f"{bits_a}x{bits_b} {name} M={m} K={k} N={n}: index scan / lut_bmm = "
                f"{scan / fwd:.4f}, / lut_bmm_grad_a = {scan / da:.4f} ({1e3 * scan:.3f} ms)"
            )


def main() -> None:
    """Print the ratios."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--only", choices=("accumulation", "resume", "index"), help="one section")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sections = {"accumulation": accumulation, "resume": resume_commit, "index": index_range}
    for name, run in sections.items():
        if args.only in (None, name):
            run(args.repeats)


if __name__ == "__main__":
    main()
