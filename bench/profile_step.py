"""Where a converted ResNet-18 step spends its time: a ``torch.profiler`` table per mode.

    python bench/profile_step.py [--threads 1] [--batch 16] [--mult mul8s_trunc8]
                                 [--modes lut ste eval float] [--rows 14] [--steps 2]

Each mode (``lut``: training step with LUT gradients, ``ste``: training step with the exact
product's gradient, ``eval``: inference forward, ``float``: the float model's training step) is
run once to warm up and then ``--steps`` times under the profiler; the table lists the ops by
self CPU time (share of the mode's total), so it shows what bounds the step. The header also
gives the minor page faults and the system CPU time per call (fresh pages the allocator had
returned to the OS and takes back: a cost no op of the table shows).
"""

from __future__ import annotations

import argparse
import resource

import torch
from e2e_resnet18 import cifar_resnet18, training_step
from torch import nn
from torch.profiler import ProfilerActivity, profile

import appmult_fx as amx


def make_model(mode: str, mult: str, x: torch.Tensor) -> nn.Module:
    """The float CIFAR ResNet-18 (``float``) or its conversion for ``mode``, calibrated on x."""
    torch.manual_seed(0)
    model = cifar_resnet18().train()
    if mode == "float":
        return model
    multiplier = amx.with_gradients(amx.multiplier(mult))
    gradient = "ste" if mode == "ste" else "lut"
    converted = amx.convert(model, amx.Spec().set_global(multiplier), gradient=gradient)
    converted.train()
    amx.calibrate(converted, [x], progress=False)
    return converted


def step_fn(mode: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """One call of the mode's unit of work (training step or inference forward)."""
    if mode == "eval":
        model.eval()

        def forward() -> None:
            with torch.no_grad():
                model(x)

        return forward
    return training_step(model, x, y)


def profile_mode(mode: str, args: argparse.Namespace) -> None:
    """Print the op table of ``args.steps`` calls of ``mode``."""
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    fn = step_fn(mode, make_model(mode, args.mult, x), x, y)
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            fn()
    after = resource.getrusage(resource.RUSAGE_SELF)
    faults = (after.ru_minflt - before.ru_minflt) / args.steps
    system_ms = (after.ru_stime - before.ru_stime) * 1e3 / args.steps
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    print(
        f"\n## {mode}: {total / 1e3 / args.steps:.1f} ms per call "
        f"({torch.get_num_threads()} threads, batch {args.batch}; {faults:.0f} minor page "
        f"faults, {system_ms:.1f} ms system time per call)"
    )
    print("| op | self ms / call | share | calls / call |\n|---|---|---|---|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.rows]:
        print(
            f"| `{e.key}` | {e.self_cpu_time_total / 1e3 / args.steps:.1f} | "
            f"{e.self_cpu_time_total / total:.1%} | {e.count // args.steps} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--mult", default="mul8s_trunc8")
    p.add_argument(
        "--modes",
        nargs="+",
        default=["lut", "ste", "eval", "float"],
        choices=("lut", "ste", "eval", "float"),
    )
    p.add_argument("--rows", type=int, default=14)
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for mode in args.modes:
        profile_mode(mode, args)


if __name__ == "__main__":
    main()
