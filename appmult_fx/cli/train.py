"""``appmult-fx train | retrain | eval | compare | demo``: the retraining workflow."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from ..app.data import DATASETS
from ..app.paths import refuse_overwriting_inputs


def register(sub: Any) -> None:
    """Add the retraining sub-commands to the ``appmult-fx`` parser."""
    p = sub.add_parser(
        "train",
        help="train a float baseline and save a checkpoint",
        description="Train a float model (the seed's recipe) and save a checkpoint.",
    )
    p.add_argument(
        "--model",
        default="lenet5",
        help="lenet5, resnet8, resnet20 or a torchvision classifier name (default lenet5)",
    )
    _data_args(p)
    _train_args(p, epochs=10)
    p.add_argument("--out", required=True, help="checkpoint file to write (e.g. float.pt)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "retrain",
        help="convert a float checkpoint and retrain it",
        description="Load a float checkpoint, convert it with a spec, calibrate, "
        "evaluate the initial accuracy, retrain, evaluate every epoch and save the "
        "converted model's state and a JSON report. Runs under torchrun too.",
    )
    p.add_argument("--checkpoint", required=True, help="float checkpoint from `appmult-fx train`")
    _spec_args(p)
    p.add_argument(
        "--gradient",
        choices=("lut", "ste"),
        default="lut",
        help="lut: the multiplier's gradient LUTs (default); ste: exact-product gradient",
    )
    _train_args(p, epochs=3)
    p.add_argument(
        "--calib-batches",
        type=int,
        default=None,
        help="training batches for the calibration pass (default: one epoch)",
    )
    p.add_argument("--out", required=True, help="checkpoint of the retrained model to write")
    p.add_argument("--report", help="JSON report to write (default: OUT with suffix .json)")
    p.set_defaults(func=_cmd_retrain)

    p = sub.add_parser("eval", help="test accuracy of a float or retrained checkpoint")
    p.add_argument("checkpoint", help="checkpoint from `appmult-fx train` or `retrain`")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "compare",
        help="STE vs LUT-gradient retraining over multipliers and seeds",
        description="Retrain one float checkpoint with every multiplier x seed x "
        "{ste, lut} (and the exact multiplier of each width) and write "
        "results.md, accuracy.png and summary.json into --out.",
    )
    p.add_argument("--checkpoint", required=True, help="float checkpoint from `appmult-fx train`")
    p.add_argument(
        "--multipliers",
        nargs="+",
        required=True,
        metavar="NAME_OR_PATH",
        help="built-in names or LUT files (with gradient LUTs for --gradient lut)",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--no-exact", action="store_true", help="skip the exact-quantized baseline runs")
    _train_args(p, epochs=3, seed=False)
    p.add_argument("--calib-batches", type=int, default=None)
    p.add_argument("--out", required=True, help="folder for reports, checkpoints, table, plot")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "demo",
        help="the whole flow on built-in data in a few minutes",
        description="Train a tiny float model on scikit-learn digits, convert it "
        "with a seed-like approximate multiplier, retrain briefly with LUT "
        "gradients and print the before/after accuracies.",
    )
    p.add_argument(
        "--multiplier",
        default=None,
        help="multiplier name or LUT file (default: the built-in mul7u_trunc7, 7-bit with 7 "
        "partial-product columns removed)",
    )
    p.add_argument("--float-epochs", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2, help="retraining epochs (default 2)")
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder to keep checkpoints and reports (default: temporary)")
    p.add_argument("--json", dest="json_path", help="also write the accuracies as JSON here")
    p.add_argument("--no-export", action="store_true", help="skip the ONNX export step")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=DATASETS, help="default digits")
    p.add_argument(
        "--data-root", help="folder of the data files (mnist, fashion-mnist, cifar10, imagefolder)"
    )
    p.add_argument("--image-size", type=int, default=None, help="resize images to this size")


def _spec_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--spec", help="spec file (JSON/TOML: global, object_type, module_name...)")
    g.add_argument("--multiplier", help='shortcut for a spec {"global": NAME_OR_PATH}')


def _train_args(p: argparse.ArgumentParser, epochs: int, seed: bool = True) -> None:
    p.add_argument("--epochs", type=int, default=epochs, help=f"default {epochs}")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument(
        "--lr-gamma",
        type=float,
        default=0.5,
        help="lr factor at 1/3 and 2/3 of the epochs (default 0.5)",
    )
    p.add_argument(
        "--milestones",
        type=float,
        nargs="*",
        default=[1 / 3, 2 / 3],
        help="fractions of the epochs where the lr drops",
    )
    p.add_argument("--weight-decay", type=float, default=0.0)
    if seed:
        p.add_argument("--seed", type=int, default=0, help="seed (bit-for-bit runs on CPU)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--max-steps", type=int, default=None, help="cap optimizer steps per epoch")
    p.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    p.add_argument(
        "--resume-override",
        action="store_true",
        help="let --resume continue with arguments that differ from the checkpoint's "
        "(refused otherwise: the run would no longer be reproducible)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _config(args: argparse.Namespace, checkpoint: str | None) -> Any:
    from ..app.train import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_gamma=args.lr_gamma,
        milestones=tuple(args.milestones),
        weight_decay=args.weight_decay,
        seed=getattr(args, "seed", 0),
        device=args.device,
        max_steps_per_epoch=args.max_steps,
        quiet=args.quiet,
        checkpoint=checkpoint,
    )


def _print_history(history: list[dict[str, Any]]) -> None:
    for h in history:
        print(
            f"epoch {h['epoch']:>3}  train loss {h['train_loss']:.4f}  acc {h['train_acc']:.4f}"
            f"  test loss {h['test_loss']:.4f}  acc {h['test_acc']:.4f}  ({h['seconds']:.1f} s)"
        )


def _cmd_train(args: argparse.Namespace) -> int:
    from ..app.train import init_distributed, rank_and_world
    from ..app.workflow import train_float

    init_distributed()
    report = train_float(
        args.model,
        args.dataset,
        _config(args, args.out),
        data_root=args.data_root,
        image_size=args.image_size,
        resume=args.resume,
        resume_override=args.resume_override,
    )
    if rank_and_world()[0] == 0:
        _print_history(report["history"])
        print(f"float test accuracy {100 * report['final_acc']:.2f}%; checkpoint: {args.out}")
    return 0


def _cmd_retrain(args: argparse.Namespace) -> int:
    from ..app.train import init_distributed, rank_and_world
    from ..app.workflow import retrain

    init_distributed()
    source = {"file": args.spec} if args.spec else {"multiplier": args.multiplier}
    report_path = args.report or str(Path(args.out).with_suffix(".json"))
    mult = args.multiplier
    refuse_overwriting_inputs(
        [
            ("--out", args.out),
            ("--report" if args.report else "the report (--out with suffix .json)", report_path),
        ],
        [
            ("--checkpoint", args.checkpoint),
            ("--spec", args.spec),
            ("--multiplier", mult if mult and Path(mult).is_file() else None),
        ],
    )
    report = retrain(
        args.checkpoint,
        source,
        _config(args, args.out),
        gradient=args.gradient,
        calib_batches=args.calib_batches,
        resume=args.resume,
        resume_override=args.resume_override,
        report_path=report_path,
    )
    if rank_and_world()[0] == 0:
        print(f"float {100 * report['float_acc']:.2f}%  initial {100 * report['initial_acc']:.2f}%")
        _print_history(report["history"])
        print(
            f"retrained {100 * report['final_acc']:.2f}% ({', '.join(report['training_modes'])}); "
            f"checkpoint: {args.out}; report: {report_path}"
        )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..app.workflow import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['checkpoint']}: {result['kind']} model, {result['dataset']} test set "
            f"({result['test_examples']} images): accuracy {100 * result['acc']:.2f}%, "
            f"loss {result['loss']:.4f}"
        )
    return 0


def _compare_command(args: argparse.Namespace) -> str:
    """The ``appmult-fx compare`` command line equivalent to ``args`` (for the results file)."""
    parts = [
        "appmult-fx",
        "compare",
        "--checkpoint",
        args.checkpoint,
        "--multipliers",
        *args.multipliers,
        "--seeds",
        *map(str, args.seeds),
        "--epochs",
        str(args.epochs),
    ]
    defaults = {
        "batch_size": 64,
        "lr": 1e-3,
        "lr_gamma": 0.5,
        "weight_decay": 0.0,
        "device": "cpu",
        "max_steps": None,
        "calib_batches": None,
    }
    for key, default in defaults.items():
        if getattr(args, key) != default:
            parts += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if list(args.milestones) != [1 / 3, 2 / 3]:
        parts += ["--milestones", *map(str, args.milestones)]
    if args.no_exact:
        parts.append("--no-exact")
    parts += ["--out", args.out]
    return " ".join(shlex.quote(p) for p in parts)


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..app.compare import compare

    summary = compare(
        args.checkpoint,
        args.multipliers,
        args.seeds,
        _config(args, None),
        args.out,
        exact=not args.no_exact,
        calib_batches=args.calib_batches,
        command=_compare_command(args),
    )
    print((Path(args.out) / "results.md").read_text())
    print(f"plot: {Path(args.out) / 'accuracy.png'}; wall time {summary['wall_time_s']:.0f} s")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..app.demo import run_demo

    run_demo(
        multiplier=args.multiplier,
        float_epochs=args.float_epochs,
        epochs=args.epochs,
        seed=args.seed,
        out_dir=args.out,
        json_path=args.json_path,
        quiet=args.quiet,
        max_steps=args.max_steps,
    )
    return 0
