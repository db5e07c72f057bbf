"""The one-pass CPU glue kernels against the torch expressions they replace.

    python bench/glue_kernels.py [--threads 1] [--repeats 20]

On ResNet-18's activation shapes at batch 16 it times, median of ``--repeats`` after a warm-up
(process CPU clock at 1 thread, wall clock otherwise):

* ``planes``: a convolution's int32 rows ``[N, Ho*Wo, O]`` to float32 ``[N, O, Ho, Wo]``,
  ``planes_from_rows`` against torch's cast of the permuted view;
* ``eval quantizer``: a calibrated activation quantized in eval mode, the one-pass kernel that
  also reports NaN/inf against a separate ``aminmax`` check before the same kernel;
* ``col2im``: the LUT input gradient's columns folded onto ``[N, C, H, W]`` (3x3, stride 1),
  ``fold_into_planes`` against the strided adds (``ops.dispatch.use_reference`` on).

Each pair is checked to give the same bits before it is timed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from appmult_fx.ops import kernels
from appmult_fx.ops.conv_gemm import col2im_rows
from appmult_fx.ops.dispatch import use_reference

# (name, channels, height = width) of the conv outputs / padded inputs at batch 16
LAYERS = [("layer1", 64, 32), ("layer2", 128, 16), ("layer3", 256, 8), ("layer4", 512, 4)]
BATCH = 16


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median time of ``fn()`` over ``repeats`` calls after one warm-up call."""
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def planes_row(ext, channels: int, side: int, repeats: int) -> tuple[float, float]:  # noqa: ANN001
    """(torch, kernel) seconds for one layer's output conversion."""
    rows = torch.randint(-(2**31), 2**31 - 1, (BATCH, side * side, channels), dtype=torch.int32)

    def torch_cast() -> torch.Tensor:
        view = rows.permute(0, 2, 1)
        return view.to(torch.float32, memory_format=torch.contiguous_format)

    assert torch.equal(ext.planes_from_rows(rows).view(torch.int32), torch_cast().view(torch.int32))
    return (
        median_seconds(torch_cast, repeats),
        median_seconds(lambda: ext.planes_from_rows(rows), repeats),
    )


def quantizer_row(ext, channels: int, side: int, repeats: int) -> tuple[float, float]:  # noqa: ANN001
    """(aminmax + kernel, kernel with its NaN/inf flag) seconds for one padded activation."""
    x = torch.randn(BATCH, channels, side + 2, side + 2)
    scale, zero = torch.tensor(0.02), torch.tensor(0.0)

    def checked_apart() -> torch.Tensor:
        lo, hi = torch.aminmax(x)
        assert bool(torch.isfinite(lo) & torch.isfinite(hi))
        return ext.quantize_forward(x, scale, zero, -128.0, 127.0, False)[0]

    def checked_inside() -> torch.Tensor:
        codes, _, nonfinite = ext.quantize_forward(x, scale, zero, -128.0, 127.0, False)
        assert not nonfinite
        return codes

    assert torch.equal(checked_apart(), checked_inside())
    return median_seconds(checked_apart, repeats), median_seconds(checked_inside, repeats)


def col2im_row(channels: int, side: int, repeats: int) -> tuple[float, float]:
    """(strided adds, kernel) seconds for one layer's col2im (padded input, 3x3 taps)."""
    size = (BATCH, channels, side + 2, side + 2)
    cols = torch.randn(1, BATCH * side * side, 9 * channels)

    def fold() -> torch.Tensor:
        return col2im_rows(cols, size, (3, 3), (1, 1), (1, 1))

    previous = use_reference(True)
    try:
        want, adds = fold(), median_seconds(fold, repeats)
    finally:
        use_reference(previous)
    assert torch.equal(fold().view(torch.int32), want.view(torch.int32))
    return adds, median_seconds(fold, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ext = kernels.cpu_extension()
    print(f"{args.threads} thread(s), batch {BATCH}, ms (torch or separate pass -> kernel)")
    print("| layer | planes | eval quantizer | col2im |\n|---|---|---|---|")
    use_reference(False)
    for name, channels, side in LAYERS:
        pairs = (
            planes_row(ext, channels, side, args.repeats),
            quantizer_row(ext, channels, side, args.repeats),
            col2im_row(channels, side, args.repeats),
        )
        cells = (f"{a * 1e3:.2f} -> {b * 1e3:.2f} ({a / b:.1f}x)" for a, b in pairs)
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
