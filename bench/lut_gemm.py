"""LUT-GEMM throughput: our kernels vs the reference vs ``torch.mm`` on the same shapes.

    python bench/lut_gemm.py [--device cpu|cuda] [--bits 7 8] [--json out.json] [--e2e]

Prints, per shape (ResNet-18 CIFAR conv layers as GEMMs at batch 16, a ViT-B MLP linear), bit
width and product (fwd, dA, dW), G-LUT-MAC/s of each implementation and its ratio to fp32
``torch.mm`` measured in the same run, then the median ratio over the ResNet-18 shapes. The
reference is timed on at most ``--reference-rows`` rows of the shape (its throughput does not
depend on M) so that a full run stays short. ``--e2e`` adds one training step of a converted
ResNet-18 (LUT gradients) against the float model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
from appmult_fx.luts.indexing import operand_values

from appmult_fx.ops import kernels, reference

# (name, M, K, N): convolutions as im2col GEMMs (M = batch * H * W, K = Cin * 9, N = Cout).
RESNET18_CIFAR = [
    ("conv1", 16384, 27, 64),
    ("layer1", 16384, 576, 64),
    ("layer2.0.conv1", 4096, 576, 128),
    ("layer2", 4096, 1152, 128),
    ("layer3.0.conv1", 1024, 1152, 256),
    ("layer3", 1024, 2304, 256),
    ("layer4.0.conv1", 256, 2304, 512),
    ("layer4", 256, 4608, 512),
    ("fc", 16, 512, 10),
]
VIT_B = [("vit-b.mlp.fc1", 197, 768, 3072)]
PRODUCTS = ("fwd", "dA", "dW")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best time (``--clock``) of ``repeats`` calls after one warm-up call."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        fn()
        sync(device)
        best = min(best, clock() - start)
    return best


def product_fns(impl, a, w, g, table, gtab) -> dict[str, Callable[[], object]]:
    return {
        "fwd": lambda: impl.lut_bmm(a, w, table),
        "dA": lambda: impl.lut_bmm_grad_a(g, a, w, gtab),
        "dW": lambda: impl.lut_bmm_grad_w(g, a, w, gtab),
    }


def int_mm_fn(m: int, k: int, n: int, device: torch.device) -> Callable[[], object] | None:
    """``torch._int_mm`` on int8 operands of this shape, or None where unsupported."""
    a8 = torch.randint(-128, 127, (m, k), dtype=torch.int8, device=device)
    b8 = torch.randint(-128, 127, (k, n), dtype=torch.int8, device=device)
    try:
        torch._int_mm(a8, b8)
    except (RuntimeError, AttributeError):
        return None
    return lambda: torch._int_mm(a8, b8)


def bench_shape(shape, bits: int, device: torch.device, backend, args) -> list[dict]:
    name, m, k, n = shape
    gen = torch.Generator().manual_seed(0)
    v = operand_values(bits, signed=False)
    table = torch.outer(v, v).to(torch.int32).to(device)
    gtab = torch.randn(1 << bits, 1 << bits, generator=gen).to(device)
    a = torch.randint(0, 1 << bits, (1, m, k), dtype=torch.uint8, generator=gen).to(device)
    w = torch.randint(0, 1 << bits, (1, k, n), dtype=torch.uint8, generator=gen).to(device)
    g = torch.randn(1, m, n, generator=gen).to(device)
    af, wf = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    macs = m * k * n / 1e9
    mm = macs / seconds(lambda: torch.mm(af, wf), device, args.repeats)
    rows = min(m, args.reference_rows)
    ref_fns = product_fns(reference, a[:, :rows], w, g[:, :rows], table, gtab)
    ours_fns = product_fns(backend, a, w, g, table, gtab)
    int_mm = int_mm_fn(m, k, n, device)
    int_mm_gmacs = macs / seconds(int_mm, device, args.repeats) if int_mm else None
    results = []
    for product in PRODUCTS:
        gmacs = {
            "torch.mm": mm,
            "ours": macs / seconds(ours_fns[product], device, args.repeats),
            "reference": rows * k * n / 1e9 / seconds(ref_fns[product], device, 1),
        }
        if int_mm_gmacs is not None:
            gmacs["torch._int_mm"] = int_mm_gmacs
        for impl, value in gmacs.items():
            results.append({"shape": name, "M": m, "K": k, "N": n, "bits": bits,
                            "product": product, "impl": impl, "gmacs": round(value, 4),
                            "ratio_vs_mm": round(value / mm, 5)})
    return results


def print_table(results: list[dict]) -> None:
    rows: dict[tuple, dict[str, dict]] = {}
    for r in results:
        rows.setdefault((r["shape"], r["M"], r["K"], r["N"], r["bits"], r["product"]), {})[
            r["impl"]] = r
    print(f"{'shape':16} {'M':>6} {'K':>5} {'N':>5} {'bits':>4} {'prod':>4} "
          f"{'ours':>8} {'ref':>7} {'mm':>8} {'int_mm':>8} {'ours/mm':>8} {'ours/ref':>8}")
    for (name, m, k, n, bits, product), impls in rows.items():
        ours, ref = impls["ours"]["gmacs"], impls["reference"]["gmacs"]
        mm = impls["torch.mm"]["gmacs"]
        im = impls.get("torch._int_mm", {}).get("gmacs")
        print(f"{name:16} {m:6d} {k:5d} {n:5d} {bits:4d} {product:>4} {ours:8.2f} {ref:7.3f} "
              f"{mm:8.2f} {im if im is not None else float('nan'):8.2f} {ours / mm:8.3f} "
              f"{ours / ref:8.0f}")


def print_medians(results: list[dict]) -> None:
    names = {s[0] for s in RESNET18_CIFAR}
    print("\nmedian over the ResNet-18 CIFAR shapes (ours / torch.mm fp32, ours / reference):")
    for bits in sorted({r["bits"] for r in results}):
        for product in PRODUCTS:
            sel = [r for r in results if r["bits"] == bits and r["product"] == product
                   and r["shape"] in names]
            ours = {r["shape"]: r for r in sel if r["impl"] == "ours"}
            ref = {r["shape"]: r["gmacs"] for r in sel if r["impl"] == "reference"}
            if not ours:
                continue
            ratio = statistics.median(r["ratio_vs_mm"] for r in ours.values())
            speedup = statistics.median(ours[s]["gmacs"] / ref[s] for s in ours)
            gm = statistics.median(r["gmacs"] for r in ours.values())
            print(f"  {bits}-bit {product:>3}: {gm:7.2f} G-LUT-MAC/s, {ratio:.3f} x torch.mm, "
                  f"{speedup:.0f} x reference")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--bits", type=int, nargs="+", default=[7, 8])
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference-rows", type=int, default=64)
    p.add_argument("--threads", type=int, help="torch/OpenMP threads (default: torch's)")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="cpu: process CPU time (robust on a shared machine; use with --threads 1)")
    p.add_argument("--no-vit", action="store_true", help="only the ResNet-18 shapes")
    p.add_argument("--e2e", action="store_true", help="also time a ResNet-18 training step")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    global clock
    args = parse_args(argv)
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backend = kernels.backend_for(device)
    shapes = RESNET18_CIFAR + ([] if args.no_vit else VIT_B)
    results = []
    for bits in args.bits:
        for shape in shapes:
            results += bench_shape(shape, bits, device, backend, args)
            print(f"  measured {shape[0]} at {bits} bits", file=sys.stderr, flush=True)
    print(f"device: {device} ({torch.get_num_threads()} threads, {args.clock} clock)")
    print_table(results)
    print_medians(results)
    out = {"device": str(device), "threads": torch.get_num_threads(), "clock": args.clock,
           "results": results}
    if args.e2e:
        from e2e_resnet18 import training_step_figures  # noqa: PLC0415 (bench-local module)

        out["e2e"] = training_step_figures(device)
        print("\nResNet-18 training step:", json.dumps(out["e2e"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
