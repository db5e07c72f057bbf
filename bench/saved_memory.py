"""Memory a training step keeps for its backward: the float CIFAR ResNet-18 against the same
model converted with LUT gradients and with straight-through (STE) gradients.

    python bench/saved_memory.py [--batch 16] [--mult mul8s_trunc8] [--json F]

Counts the bytes of the distinct storages autograd saves during one forward (seen through
``torch.autograd.graph.saved_tensors_hooks``; a storage saved by several ops counts once), in
MiB. The figures in docs/kernels.md, "Input gradient left out where a ReLU discards it".
"""

from __future__ import annotations

import argparse
import json

import torch
from e2e_resnet18 import cifar_resnet18
from torch import nn

import appmult_fx as amx


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for the backward of ``model(x)``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x.clone().requires_grad_())
    return sum(storages.values())


def saved_memory(batch: int = 16, mult: str = "mul8s_trunc8") -> dict[str, float]:
    """MiB kept for the backward by the float model and its LUT / STE conversions."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    multiplier = amx.with_gradients(amx.multiplier(mult))
    out = {"float": saved_bytes(cifar_resnet18().train(), x) / 2**20}
    for gradient in ("lut", "ste"):
        model = amx.convert(cifar_resnet18(), amx.Spec().set_global(multiplier), gradient=gradient)
        amx.calibrate(model.train(), [x], progress=False)
        out[gradient] = saved_bytes(model, x) / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--mult", default="mul8s_trunc8")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    if args.batch < 1:
        p.error("expected --batch >= 1")
    mib = saved_memory(args.batch, args.mult)
    for name, value in mib.items():
        print(f"{name:<6} {value:8.1f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "multiplier": args.mult, "MiB": mib}, f, indent=1)


if __name__ == "__main__":
    main()
