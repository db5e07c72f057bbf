"""LUT-GEMM throughput: our kernels vs the reference vs ``torch.mm`` on the same shapes.

    python bench/lut_gemm.py [--device cpu|cuda] [--bits 7 8 8x4 8x2] [--json out.json] [--e2e]

Prints, per shape (ResNet-18 CIFAR conv layers as GEMMs at batch 16, a ViT-B MLP linear), width
(``8`` = an 8 x 8-bit table, ``8x4`` = 8-bit activations x 4-bit weights, a 256 x 16 table) and
product (fwd, dA, dW), G-LUT-MAC/s of each implementation and its ratio to fp32 ``torch.mm``
of the forward shape measured in the same run (``ours/mm``, the issues' measure), and to the
fp32 GEMM a float training step runs for the same product (``ours/prod``: ``G @ W^T`` for dA,
``A^T @ G`` for dW, whose inner dimensions N and M run below the forward shape's speed on the
narrow layers), then the median ratios over the ResNet-18 shapes. For a width with a
side of at most 4 bits the same product is also timed through the generic kernels ("generic":
the narrow side's table padded to 5 bits, which the register fast path does not take). The
reference is timed on at most ``--reference-rows`` rows of the shape (its throughput does not
depend on M) so that a full run stays short. ``--e2e`` adds one training step of a converted
ResNet-18 (LUT gradients) against the float model. ``--zeros Z`` sets a share Z of the
activation codes to 0 and the gradient table's row 0 to zero, as after a ReLU with any
multiplier whose ``T[0, :]`` is 0 (the product table here is exact, so its row 0 is). dW skips
rows whose group of codes are all 0 (few, with codes drawn apart); the forward skips the zero
codes where the table narrows to 16 bits without an offset (``--bits 7x8``: a 128 x 256 table;
the unsigned 8 x 8 table needs an offset, which leaves its zero row non-zero in the planes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
from appmult_fx.luts.indexing import operand_values, widths_label
from torch import Tensor

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


def float_product_fns(af: Tensor, wf: Tensor, gf: Tensor) -> dict[str, Callable[[], object]]:
    """The fp32 GEMMs a float training step runs for each product of ``A [M, K] @ W [K, N]``
    with output gradient ``G [M, N]`` (as autograd runs them for a linear layer): forward
    ``A @ W``, ``dA = G @ W^T`` (inner dimension N) and ``dW = A^T @ G`` (inner dimension M)."""
    return {
        "fwd": lambda: torch.mm(af, wf),
        "dA": lambda: torch.mm(gf, wf.t()),
        "dW": lambda: torch.mm(af.t(), gf),
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


def parse_width(text: str) -> tuple[int, int]:
    """``"8"`` -> (8, 8), ``"8x4"`` -> (8, 4): (activation bits, weight bits)."""
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected a width like 8 or 8x4, got {text!r}")
    return parts[0], parts[1]


def padded_to_generic(table: Tensor, gtab: Tensor) -> tuple[Tensor, Tensor]:
    """The tables with a side of <= 16 entries zero-padded to 32: the same products for codes
    below 16, through the generic kernels (the register fast path takes <= 16 only)."""
    rows, cols = max(table.shape[0], 32), max(table.shape[1], 32)
    out = []
    for t in (table, gtab):
        big = t.new_zeros(
            rows if t.shape[0] <= 16 else t.shape[0], cols if t.shape[1] <= 16 else t.shape[1]
        )
        big[: t.shape[0], : t.shape[1]] = t
        out.append(big)
    return out[0], out[1]


def bench_shape(shape, width: tuple[int, int], device: torch.device, backend, args) -> list[dict]:
    name, m, k, n = shape
    bits_a, bits_b = width
    gen = torch.Generator().manual_seed(0)
    va, vb = operand_values(bits_a, signed=False), operand_values(bits_b, signed=False)
    table = torch.outer(va, vb).to(torch.int32).to(device)
    gtab = torch.randn(1 << bits_a, 1 << bits_b, generator=gen).to(device)
    a = torch.randint(0, 1 << bits_a, (1, m, k), dtype=torch.uint8, generator=gen)
    if args.zeros > 0:
        a = torch.where(torch.rand(a.shape, generator=gen) < args.zeros, 0, a).to(torch.uint8)
        gtab[0] = 0.0
    a = a.to(device)
    w = torch.randint(0, 1 << bits_b, (1, k, n), dtype=torch.uint8, generator=gen).to(device)
    g = torch.randn(1, m, n, generator=gen).to(device)
    af, wf = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    gf = torch.randn(m, n, device=device)
    macs = m * k * n / 1e9
    float_products = float_product_fns(af, wf, gf)
    mm = macs / seconds(float_products["fwd"], device, args.repeats)
    product_mm = {
        p: mm if p == "fwd" else macs / seconds(float_products[p], device, args.repeats)
        for p in PRODUCTS
    }
    rows = min(m, args.reference_rows)
    ref_fns = product_fns(reference, a[:, :rows], w, g[:, :rows], table, gtab)
    ours_fns = product_fns(backend, a, w, g, table, gtab)
    generic_fns = None
    if min(width) <= 4 and device.type == "cpu":
        generic_fns = product_fns(backend, a, w, g, *padded_to_generic(table, gtab))
    int_mm = int_mm_fn(m, k, n, device)
    int_mm_gmacs = macs / seconds(int_mm, device, args.repeats) if int_mm else None
    results = []
    for product in PRODUCTS:
        gmacs = {
            "torch.mm": mm,
            "float product": product_mm[product],
            "ours": macs / seconds(ours_fns[product], device, args.repeats),
            "reference": rows * k * n / 1e9 / seconds(ref_fns[product], device, 1),
        }
        if int_mm_gmacs is not None:
            gmacs["torch._int_mm"] = int_mm_gmacs
        if generic_fns is not None:
            gmacs["generic"] = macs / seconds(generic_fns[product], device, args.repeats)
        for impl, value in gmacs.items():
            results.append(
                {
                    "shape": name,
                    "M": m,
                    "K": k,
                    "N": n,
                    "bits": widths_label(bits_a, bits_b),
                    "bits_a": bits_a,
                    "bits_b": bits_b,
                    "product": product,
                    "impl": impl,
                    "gmacs": round(value, 4),
                    "ratio_vs_mm": round(value / mm, 5),
                    "ratio_vs_product": round(value / product_mm[product], 5),
                }
            )
    return results


def print_table(results: list[dict]) -> None:
    rows: dict[tuple, dict[str, dict]] = {}
    for r in results:
        rows.setdefault((r["shape"], r["M"], r["K"], r["N"], r["bits"], r["product"]), {})[
            r["impl"]
        ] = r
    print(
        f"{'shape':16} {'M':>6} {'K':>5} {'N':>5} {'bits':>4} {'prod':>4} "
        f"{'ours':>8} {'generic':>8} {'ref':>7} {'mm':>8} {'int_mm':>8} {'ours/mm':>8} "
        f"{'ours/ref':>8} {'ours/prod':>9}"
    )
    nan = float("nan")
    for (name, m, k, n, bits, product), impls in rows.items():
        ours, ref = impls["ours"]["gmacs"], impls["reference"]["gmacs"]
        mm = impls["torch.mm"]["gmacs"]
        im = impls.get("torch._int_mm", {}).get("gmacs", nan)
        gen = impls.get("generic", {}).get("gmacs", nan)
        print(
            f"{name:16} {m:6d} {k:5d} {n:5d} {bits:>4} {product:>4} {ours:8.2f} {gen:8.2f} "
            f"{ref:7.3f} {mm:8.2f} {im:8.2f} {ours / mm:8.3f} {ours / ref:8.0f} "
            f"{impls['ours']['ratio_vs_product']:9.3f}"
        )


def print_medians(results: list[dict]) -> None:
    names = {s[0] for s in RESNET18_CIFAR}
    print(
        "\nmedian over the ResNet-18 CIFAR shapes (ours / torch.mm fp32 of the forward shape,"
        " ours / the fp32 GEMM of the same product, ours / reference):"
    )
    for bits in dict.fromkeys(r["bits"] for r in results):
        for product in PRODUCTS:
            sel = [
                r
                for r in results
                if r["bits"] == bits and r["product"] == product and r["shape"] in names
            ]
            ours = {r["shape"]: r for r in sel if r["impl"] == "ours"}
            ref = {r["shape"]: r["gmacs"] for r in sel if r["impl"] == "reference"}
            if not ours:
                continue
            ratio = statistics.median(r["ratio_vs_mm"] for r in ours.values())
            vs_product = statistics.median(r["ratio_vs_product"] for r in ours.values())
            speedup = statistics.median(ours[s]["gmacs"] / ref[s] for s in ours)
            gm = statistics.median(r["gmacs"] for r in ours.values())
            generic = {r["shape"]: r["gmacs"] for r in sel if r["impl"] == "generic"}
            vs_generic = (
                f", {statistics.median(ours[s]['gmacs'] / generic[s] for s in ours):.2f} x generic"
                if generic
                else ""
            )
            print(
                f"  {bits:>4} {product:>3}: {gm:7.2f} G-LUT-MAC/s, {ratio:.3f} x torch.mm, "
                f"{vs_product:.3f} x the float product, {speedup:.0f} x reference{vs_generic}"
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--bits",
        type=parse_width,
        nargs="+",
        default=[(7, 7), (8, 8)],
        help="widths: 8 (8x8 table) or AxB (A-bit activations, B-bit weights)",
    )
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference-rows", type=int, default=64)
    p.add_argument("--threads", type=int, help="torch/OpenMP threads (default: torch's)")
    p.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="cpu: process CPU time (robust on a shared machine; use with --threads 1)",
    )
    p.add_argument("--no-vit", action="store_true", help="only the ResNet-18 shapes")
    p.add_argument(
        "--zeros",
        type=float,
        default=0.0,
        help="share of activation codes set to 0 (a ReLU's zeros), 0 <= Z < 1",
    )
    p.add_argument("--e2e", action="store_true", help="also time a ResNet-18 training step")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    global clock
    args = parse_args(argv)
    if not 0.0 <= args.zeros < 1.0:
        print(f"--zeros must be in [0, 1), got {args.zeros}", file=sys.stderr)
        return 2
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backend = kernels.backend_for(device)
    shapes = RESNET18_CIFAR + ([] if args.no_vit else VIT_B)
    results = []
    for width in args.bits:
        for shape in shapes:
            results += bench_shape(shape, width, device, backend, args)
            label = widths_label(*width)
            print(f"  measured {shape[0]} at {label} bits", file=sys.stderr, flush=True)
    print(f"device: {device} ({torch.get_num_threads()} threads, {args.clock} clock)")
    print_table(results)
    print_medians(results)
    out = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "results": results,
    }
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
