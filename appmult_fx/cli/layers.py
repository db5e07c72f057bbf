"""``appmult-fx layers MODEL SPEC``: the per-layer assignment table of a torchvision model."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from appmult_fx.passes.records import LayerRecord
from appmult_fx.passes.spec import Spec

from ..convert import convert, layers


def spec_from_argument(text: str) -> Spec:
    """A spec from a ``.json``/``.toml`` file, or one multiplier (name or LUT path) for all."""
    path = Path(text)
    if path.suffix.lower() in (".json", ".toml"):
        if not path.exists():
            raise FileNotFoundError(f"spec file {text!r} does not exist")
        return Spec.from_file(path)
    return Spec().set_global(None if text.lower() in ("none", "float") else text)


def format_table(records: list[LayerRecord]) -> str:
    """A text table of layer records with totals (approximated share of layers and MACs)."""
    header = f"{'layer':<32} {'op':<10} {'multiplier':<40} {'bits':>4} {'grad':<5} {'MACs':>14}"
    lines = [header, "-" * len(header)] + [str(r) for r in records]
    approx = [r for r in records if r.approximate]
    lines.append("-" * len(header))
    lines.append(f"{len(approx)} of {len(records)} multiply layers approximate")
    if records and all(r.macs is not None for r in records):
        total = sum(r.macs for r in records)
        share = sum(r.macs for r in approx) / total if total else 0.0
        lines.append(f"MACs: {total:,} in total, {share:.1%} through approximate multipliers")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    import torchvision

    try:
        model = torchvision.models.get_model(args.model, weights=None, num_classes=args.num_classes)
    except ValueError as exc:
        raise ValueError(f"unknown torchvision model {args.model!r}: {exc}") from exc
    model.eval()
    example = torch.randn(1, 3, args.image_size, args.image_size)
    gm = convert(
        model, spec_from_argument(args.spec), gradient=args.gradient, example_inputs=example
    )
    print(format_table(layers(gm)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``layers`` sub-command."""
    p = sub.add_parser(
        "layers",
        help="print which multiplier each layer of a torchvision model gets",
        description="Convert a torchvision model (random weights) with SPEC and print the "
        "per-layer table: name, op, multiplier, bits, gradient mode, multiply count.",
    )
    p.add_argument("model", help="torchvision model name, e.g. resnet18")
    p.add_argument(
        "spec", help="spec file (.json/.toml), or a multiplier name / LUT path for every layer"
    )
    p.add_argument("--image-size", type=int, default=224, help="square input size (default 224)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--gradient", choices=("lut", "ste"), default="lut")
    p.set_defaults(func=_run)
