"""How much of the LUT input gradient (dA) a converted ResNet-18 could leave out: per conv, the
share of its padded input that is exactly 0 (a ReLU's zeros and the padding, whose gradient the
ReLU's and the padding's backward discard), the share of zero codes, and, in the im2col matrix
the dA kernel sweeps, the share of (pixel, tap) entries that are exact zeros and of aligned runs
of 16 such entries (the unit a kernel can skip without listing entries one by one).

    python bench/dead_inputs.py [--batch 16] [--mult mul8s_trunc8] [--steps 3] [--json F]

Measured in training mode after ``--steps`` LUT-gradient SGD steps on random data (the
figures in docs/kernels.md, "Input gradient left out where a ReLU discards it").
"""

from __future__ import annotations

import argparse
import json

import torch
from e2e_resnet18 import cifar_resnet18, training_step
from torch import Tensor

import appmult_fx as amx
from appmult_fx.ops.conv_gemm import im2col_indices

RUN = 16  # entries of an aligned run along K


def _im2col_shares(zero: Tensor, kernel: tuple[int, int], geometry: dict) -> tuple[float, float]:
    """Shares of zero entries and of all-zero aligned runs of ``RUN`` along K in the im2col
    matrix of the 0/1 tensor ``zero [N, C, H, W]`` (K ordered kh, kw, C as the kernels read it)."""
    cols = im2col_indices(
        zero.to(torch.uint8), kernel, geometry["stride"], geometry["dilation"], geometry["groups"]
    )
    k = cols.shape[-1] // RUN * RUN
    runs = cols[..., :k].reshape(*cols.shape[:-1], -1, RUN).all(-1)
    return cols.float().mean().item(), runs.float().mean().item() if k else 0.0


def dead_input_shares(batch: int = 16, mult: str = "mul8s_trunc8", steps: int = 3) -> list[dict]:
    """Per converted conv of the CIFAR ResNet-18: the shares described in the module docstring."""
    torch.manual_seed(0)
    model = cifar_resnet18().train()
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    multiplier = amx.with_gradients(amx.multiplier(mult))
    converted = amx.convert(model, amx.Spec().set_global(multiplier), gradient="lut").train()
    amx.calibrate(converted, [x], progress=False)
    step = training_step(converted, x, y)
    for _ in range(steps):
        step()
    rows: list[dict] = []
    hooks = []
    for record in amx.layers(converted):
        if record.op != "conv2d" or record.parts is None:
            continue
        kernel = tuple(model.get_submodule(record.name).kernel_size)

        def observe(_module, inputs, outputs, name=record.name, kernel=kernel, parts=record.parts):  # noqa: ANN001, ANN202
            padded, codes = inputs[0], outputs[0]
            zeros = padded == 0
            entries, runs = _im2col_shares(zeros, kernel, parts.geometry)
            rows.append(
                {
                    "conv": name,
                    "input_zero": round(zeros.float().mean().item(), 4),
                    "zero_codes": round((codes == 0).float().mean().item(), 4),
                    "im2col_zero": round(entries, 4),
                    "im2col_zero_runs16": round(runs, 4),
                }
            )

        quantizer = converted.get_submodule(record.parts.quantizers[0])
        hooks.append(quantizer.register_forward_hook(observe))
    with torch.no_grad():
        converted(x)
    for hook in hooks:
        hook.remove()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--mult", default="mul8s_trunc8")
    p.add_argument("--steps", type=int, default=3, help="training steps before measuring")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    if args.steps < 0 or args.batch < 1:
        p.error("expected --steps >= 0 and --batch >= 1")
    rows = dead_input_shares(args.batch, args.mult, args.steps)
    print(f"{'conv':<24} {'input = 0':>9} {'code 0':>7} {'im2col 0':>9} {'16-runs 0':>10}")
    for r in rows:
        print(
            f"{r['conv']:<24} {r['input_zero']:>9.3f} {r['zero_codes']:>7.3f} "
            f"{r['im2col_zero']:>9.3f} {r['im2col_zero_runs16']:>10.3f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
