"""``appmult-fx fp-train``: ApproxTrain's LeNet-5-like MNIST example with an FP multiplier."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..app.data import DATASETS


def register(sub: Any) -> None:
    """Add the ``fp-train`` sub-command to the ``appmult-fx`` parser."""
    p = sub.add_parser(
        "fp-train",
        help="train ApproxTrain's LeNet from scratch with an FP approximate multiplier",
        description="Train ApproxTrain's LeNet-5-like network (conv 5x5x32, conv 5x5x32, dense "
        "1024, dense 10; Adam, constant lr) from scratch, every multiply of the forward and "
        "(with --backward approximate) backward passes through an FP multiplier.",
    )
    p.add_argument(
        "--multiplier",
        default="fp_mbm7",
        help="FP multiplier name or 'fp32' for the float baseline (default fp_mbm7)",
    )
    p.add_argument("--backward", choices=("approximate", "exact"), default="approximate")
    p.add_argument("--dataset", default="mnist5k", choices=DATASETS, help="default mnist5k")
    p.add_argument("--data-root", help="folder of the data files (mnist, fashion-mnist)")
    p.add_argument("--image-size", type=int, default=None, help="resize images to this size")
    p.add_argument("--epochs", type=int, default=2, help="default 2 (ApproxTrain's example)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--lr-gamma",
        type=float,
        default=1.0,
        help="lr factor at 1/3 and 2/3 of the epochs (default 1: constant, as ApproxTrain)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--max-steps", type=int, default=None, help="cap optimizer steps per epoch")
    p.add_argument("--json", dest="json_path", help="write the report (history included) here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_fp_train)


def _print_row(h: dict[str, Any]) -> None:
    print(
        f"epoch {h['epoch']:>3}  train loss {h['train_loss']:.4f}  acc {h['train_acc']:.4f}"
        f"  test loss {h['test_loss']:.4f}  acc {h['test_acc']:.4f}  ({h['seconds']:.1f} s)",
    )


def _cmd_fp_train(args: argparse.Namespace) -> int:
    from ..app.fp_example import train_fp

    report = train_fp(
        None if args.multiplier == "fp32" else args.multiplier,
        args.dataset,
        backward=args.backward,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_gamma=args.lr_gamma,
        seed=args.seed,
        device=args.device,
        max_steps_per_epoch=args.max_steps,
        data_root=args.data_root,
        image_size=args.image_size,
        quiet=args.quiet,
    )
    for row in report["history"]:
        _print_row(row)
    how = "" if report["multiplier"] == "fp32" else f" ({args.backward} backward)"
    print(
        f"{report['multiplier']}{how} test accuracy {100 * report['final_acc']:.2f}%"
        f" on {args.dataset}"
    )
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))
    return 0
