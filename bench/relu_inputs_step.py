"""What leaving out the input gradient that a ReLU discards saves in a LUT training step: the
converted CIFAR ResNet-18 of ``e2e_resnet18.py`` against the same graph without the
``relu_input`` arguments, timed alternately in one run.

    python bench/relu_inputs_step.py [--batch 16] [--size 32] [--mult mul8s_trunc8]
        [--threads N] [--clock wall|cpu] [--repeats 3] [--rounds 2]

Inputs are ``--size`` x ``--size`` images. Prints JSON: how many convs get the argument, the
best step time of each graph over ``--rounds`` alternations of ``--repeats`` steps (SGD with a
learning rate of 0: the same work without drifting), and their ratio.
"""

from __future__ import annotations

import argparse
import copy
import json

import e2e_resnet18 as e2e
import torch
from appmult_fx.passes.relu_inputs import RELU_INPUT, drop_relu_inputs
from torch import fx

import appmult_fx as amx


def relu_input_convs(gm: fx.GraphModule) -> tuple[int, int]:
    """(convs given ``relu_input``, approximate layers) of a converted model."""
    layers = amx.layers(gm)
    given = sum(RELU_INPUT in n.kwargs for n in gm.graph.nodes)
    return given, len(layers)


def relu_input_step_figures(
    batch: int = 16,
    mult: str = "mul8s_trunc8",
    repeats: int = 3,
    rounds: int = 2,
    size: int = 32,
) -> dict:
    """Step seconds of the converted ResNet-18 with and without ``relu_input``."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    multiplier = amx.with_gradients(amx.multiplier(mult))
    converted = amx.convert(e2e.cifar_resnet18(), amx.Spec().set_global(multiplier), gradient="lut")
    amx.calibrate(converted.train(), [x], progress=False)
    plain = copy.deepcopy(converted)
    drop_relu_inputs(plain)
    given, layers = relu_input_convs(converted)
    with_s, without_s = [], []
    steps = [e2e.training_step(gm, x, y, lr=0.0) for gm in (converted, plain)]
    for _ in range(rounds):
        with_s.append(e2e.best_seconds(steps[0], x.device, repeats))
        without_s.append(e2e.best_seconds(steps[1], x.device, repeats))
    return {
        "batch": batch,
        "size": size,
        "multiplier": mult,
        "threads": torch.get_num_threads(),
        "layers": layers,
        "convs_given_relu_input": given,
        "with_s": round(min(with_s), 4),
        "without_s": round(min(without_s), 4),
        "ratio": round(min(with_s) / min(without_s), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=32, help="input height and width")
    p.add_argument("--mult", default="mul8s_trunc8")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    p.add_argument("--clock", choices=tuple(e2e.CLOCKS), default="wall")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    if min(args.batch, args.repeats, args.rounds) < 1 or args.size < 32:
        p.error("expected --batch, --repeats and --rounds >= 1 and --size >= 32")
    e2e.clock = e2e.CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = relu_input_step_figures(args.batch, args.mult, args.repeats, args.rounds, args.size)
    print(json.dumps({**figures, "clock": args.clock}))


if __name__ == "__main__":
    main()
