"""How a converted model's step time grows with batch size, threads and bit width.

    python bench/scaling.py [--model resnet20] [--batches 1 16 64 256] [--bits 2 4 6 7 8]
                            [--threads 1 2] [--clock wall|cpu] [--json scaling.json]
                            [--plot docs/scaling.png]

For every (threads, bits, batch) it times one training step (forward + backward + SGD) of the
float model and of its conversion with ``mul{bits}s_exact`` and LUT gradients, plus the
converted inference forward (eval, no grad), best of ``--repeats`` after a warm-up (``--clock``).
It then fits ``seconds = fixed + per_image * batch`` per (threads, bits, mode) by least squares,
prints the fits (so a run's time is ``steps * (fixed + per_image * batch)``) and draws the
figure. Batch sizes above ``--max-batch-high-bits`` are skipped at 7 and 8 bits to keep the
sweep short.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable

import torch
from e2e_resnet18 import training_step
from torch import nn

import appmult_fx as amx

MODES = ("float", "lut", "lut_eval")


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def best_seconds(fn: Callable[[], None], repeats: int) -> float:
    """Best time (``--clock``) of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


def forward(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One inference forward of ``model`` (eval mode, no grad)."""

    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def measure(model_name: str, bits: int, batch: int, repeats: int) -> dict[str, float]:
    """Seconds per float step, LUT-gradient step and LUT inference forward at one point."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    model = amx.build_model(model_name).train()
    mult = amx.with_gradients(amx.multiplier(f"mul{bits}s_exact"))
    converted = amx.convert(model, amx.Spec().set_global(mult), gradient="lut").train()
    amx.calibrate(converted, [x[: max(2, batch)]], progress=False)
    out = {
        "float": best_seconds(training_step(model, x, y, lr=1e-4), repeats),
        "lut": best_seconds(training_step(converted, x, y, lr=1e-4), repeats),
    }
    converted.eval()
    out["lut_eval"] = best_seconds(forward(converted, x), repeats)
    return out


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``(fixed, per_image)`` of ``seconds = fixed + per_image * batch``."""
    xs = torch.tensor([float(b) for b, _ in points], dtype=torch.float64)
    ys = torch.tensor([s for _, s in points], dtype=torch.float64)
    if len(points) == 1:
        return 0.0, float(ys[0] / xs[0])
    design = torch.stack([torch.ones_like(xs), xs], dim=1)
    sol = torch.linalg.lstsq(design, ys[:, None]).solution[:, 0]
    return float(sol[0]), float(sol[1])


def plot(results: list[dict], path: str) -> None:
    """Seconds per step against batch size (one line per threads/bits/mode) and the per-image
    cost against bits, written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    threads = sorted({r["threads"] for r in results})
    shown = sorted({min(r["bits"] for r in results), max(r["bits"] for r in results)})
    for t in threads:
        lines = [("float", shown[-1], ":", f"float step ({t} thr)")]
        for bits in shown:
            lines += [
                ("lut", bits, "-", f"LUT-gradient step, {bits}-bit ({t} thr)"),
                ("lut_eval", bits, "--", f"LUT inference, {bits}-bit ({t} thr)"),
            ]
        for mode, bits, style, label in lines:
            pts = sorted(
                (r["batch"], r[mode]) for r in results if r["threads"] == t and r["bits"] == bits
            )
            ax1.plot(*zip(*pts), style, marker="o", label=label)
        per = sorted({r["bits"] for r in results if r["threads"] == t})
        for mode, style in (("lut", "-"), ("lut_eval", "--")):
            ratios = []
            for bits in per:
                sel = [r for r in results if r["threads"] == t and r["bits"] == bits]
                big = max(sel, key=lambda r: r["batch"])
                ratios.append(big[mode] / big["float"])
            ax2.plot(per, ratios, style, marker="o", label=f"{mode} / float step ({t} thr)")
    ax1.set(
        xscale="log",
        yscale="log",
        xlabel="batch size",
        ylabel="seconds",
        title="time per step / forward against batch size",
    )
    ax2.set(
        xlabel="bits",
        ylabel="x float training step",
        title="cost against bit width (largest batch measured)",
    )
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=folder)
    os.close(fd)
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    p.add_argument("--bits", type=int, nargs="+", default=[2, 4, 6, 7, 8])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="cpu: process CPU time (robust on a shared machine with one thread)",
    )
    p.add_argument("--max-batch-high-bits", type=int, default=256)
    p.add_argument("--json", help="write the points and fits here")
    p.add_argument("--plot", help="write the figure (PNG) here")
    args = p.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    results = []
    for t in args.threads:
        torch.set_num_threads(t)
        for bits in args.bits:
            for batch in args.batches:
                if bits >= 7 and batch > args.max_batch_high_bits:
                    continue
                sec = measure(args.model, bits, batch, args.repeats)
                results.append({"threads": t, "bits": bits, "batch": batch, **sec})
                print(json.dumps(results[-1]), flush=True)
    fits = []
    for t in args.threads:
        for bits in args.bits:
            for mode in MODES:
                pts = [
                    (r["batch"], r[mode])
                    for r in results
                    if r["threads"] == t and r["bits"] == bits
                ]
                fixed, per_image = fit(pts)
                fits.append(
                    {
                        "threads": t,
                        "bits": bits,
                        "mode": mode,
                        "fixed_s": round(fixed, 4),
                        "per_image_ms": round(1e3 * per_image, 3),
                    }
                )
                print(
                    f"{args.model} {t} thr {bits}-bit {mode:8}: "
                    f"{fixed:7.3f} s + {1e3 * per_image:7.2f} ms * batch"
                )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "results": results, "fits": fits}, fh, indent=1)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
