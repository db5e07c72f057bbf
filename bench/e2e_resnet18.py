"""End-to-end figures: one training step and one inference forward of a converted ResNet-18
(LUT gradients) vs the float model.

    python bench/e2e_resnet18.py [--device cpu|cuda] [--batch 16] [--mult mul8s_trunc8]
                                 [--threads N] [--clock wall|cpu] [--repeats 2]
                                 [--keep-freed-memory]

Times (best of ``--repeats`` after a warm-up) the float training step, the converted model's
training step with LUT gradients and with straight-through (STE) gradients, and the inference
forward of both; ``--clock cpu`` uses the process CPU time (robust on a shared machine with
``--threads 1``; with more threads it adds up the threads' time). ``--keep-freed-memory`` first
calls :func:`appmult_fx.keep_freed_memory`, as the ``appmult-fx`` command line does
(``bench/step_faults.py`` times the two settings against each other).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
import torchvision
from torch import nn

import appmult_fx as amx


def cifar_resnet18() -> nn.Module:
    """torchvision ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool), 10 classes."""
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def best_seconds(fn: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Best time (``--clock``) of ``fn()`` over ``repeats`` calls, after one warm-up call."""

    def timed() -> float:
        start = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return clock() - start

    timed()
    return min(timed() for _ in range(repeats))


def training_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float = 1e-3
) -> Callable[[], None]:
    """One SGD training step of ``model`` on ``(x, y)`` (forward, backward, update)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """Best time of forward + backward + SGD step (after one warm-up step)."""
    return best_seconds(training_step(model, x, y), x.device, repeats)


@torch.no_grad()
def eval_seconds(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Best time of one inference forward in eval mode (after one warm-up), mode restored."""
    was_training = model.training
    model.eval()
    best = best_seconds(lambda: model(x), x.device, repeats)
    model.train(was_training)
    return best


def training_step_figures(
    device: torch.device, batch: int = 16, mult: str = "mul8s_trunc8", repeats: int = 2
) -> dict:
    """Seconds per training step and per inference forward of the float and the converted
    model, and their ratios."""
    torch.manual_seed(0)
    model = cifar_resnet18().to(device).train()
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    multiplier = amx.with_gradients(amx.multiplier(mult))
    converted = amx.convert(model, amx.Spec().set_global(multiplier), gradient="lut").to(device)
    converted.train()
    amx.calibrate(converted, [x], progress=False)
    ste = amx.convert(model, amx.Spec().set_global(multiplier), gradient="ste").to(device)
    ste.train()
    amx.calibrate(ste, [x], progress=False)
    float_s = step_seconds(model, x, y, repeats)
    lut_s = step_seconds(converted, x, y, repeats)
    ste_s = step_seconds(ste, x, y, repeats)
    float_eval_s = eval_seconds(model, x, repeats)
    lut_eval_s = eval_seconds(converted, x, repeats)
    return {
        "device": str(device),
        "batch": batch,
        "multiplier": mult,
        "threads": torch.get_num_threads(),
        "float_step_s": round(float_s, 4),
        "lut_step_s": round(lut_s, 4),
        "ratio": round(lut_s / float_s, 3),
        "ste_step_s": round(ste_s, 4),
        "ste_ratio": round(ste_s / float_s, 3),
        "float_eval_s": round(float_eval_s, 4),
        "lut_eval_s": round(lut_eval_s, 4),
        "eval_ratio": round(lut_eval_s / float_eval_s, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--mult", default="mul8s_trunc8")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="keep freed memory in the process first, as the command line does",
    )
    args = p.parse_args()
    kept = amx.keep_freed_memory() if args.keep_freed_memory else False
    global clock
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = training_step_figures(torch.device(args.device), args.batch, args.mult, args.repeats)
    print(json.dumps({**figures, "clock": args.clock, "keep_freed_memory": kept}))


if __name__ == "__main__":
    main()
