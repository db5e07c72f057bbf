"""``appmult-fx export CHECKPOINT OUT``: a retrained checkpoint -> ONNX + manifest + LUTs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ..export import export, load_exported


def compare_outputs(reference: np.ndarray, outputs: np.ndarray) -> dict[str, float | bool]:
    """Max difference relative to the reference logits' range, and argmax agreement."""
    span = float(reference.max() - reference.min()) or 1.0
    return {
        "max_rel_diff": float(np.abs(outputs - reference).max() / span),
        "argmax_equal": bool((outputs.argmax(-1) == reference.argmax(-1)).all()),
    }


# what `export` writes into its output folder (files, then folders)
_OUTPUT_FILES = ("model.onnx", "model_portable.onnx", "manifest.json")
_OUTPUT_FOLDERS = ("luts",)


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse, before anything is read or written, a negative ``--verify`` and an output
    folder that is (or would overwrite) the checkpoint."""
    from ..app.paths import inside, same_path

    if args.verify < 0:
        raise ValueError(f"--verify N: the number of test inputs must be >= 0, got {args.verify}")
    out, ck = args.out, args.checkpoint
    if (
        same_path(out, ck)
        or any(same_path(Path(out) / f, ck) for f in _OUTPUT_FILES)
        or any(inside(ck, Path(out) / d) for d in _OUTPUT_FOLDERS)
    ):
        raise ValueError(
            f"output folder {out}: export writes {', '.join(_OUTPUT_FILES)} and luts/ there, "
            f"which would overwrite the checkpoint {ck}; choose another folder"
        )


def _run(args: argparse.Namespace) -> int:
    from ..app.train import first_batch
    from ..app.workflow import datasets, load_retrained

    _check_arguments(args)
    gm, ck = load_retrained(args.checkpoint)
    gm.eval()
    test = datasets(ck["data"])[2]
    out = export(gm, first_batch(test, 2), args.out, portable=args.portable, opset=args.opset)
    manifest = json.loads((out / "manifest.json").read_text())
    print(
        f"wrote {out}: {len(manifest['layers'])} approximate layers, "
        f"{len(manifest['multipliers'])} multiplier(s)"
    )
    if not args.verify:
        return 0
    x = first_batch(test, args.verify)
    short = (
        f" (all of the test set: it has {len(x)} inputs, fewer than the {args.verify} asked)"
        if len(x) < args.verify
        else ""
    )
    with torch.no_grad():
        reference = gm(x).numpy()
    worst = True
    for portable in (False, True) if args.portable else (False,):
        result = compare_outputs(reference, load_exported(out, portable=portable)(x).numpy())
        mode = "portable" if portable else "custom (lowered at load)"
        print(
            f"verify {mode}: {len(x)} inputs{short}, max diff {result['max_rel_diff']:.3g} of the "
            f"logits' range, argmax {'identical' if result['argmax_equal'] else 'DIFFERS'}"
        )
        worst &= bool(result["argmax_equal"]) and result["max_rel_diff"] <= args.tolerance
    return 0 if worst else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    p = sub.add_parser(
        "export",
        help="export a retrained checkpoint to ONNX with a LUT manifest",
        description="Write OUT/model.onnx (one appmult.LutConv/LutGemm node per approximate "
        "layer), OUT/luts/*.lut and OUT/manifest.json for a checkpoint of `appmult-fx retrain`.",
    )
    p.add_argument("checkpoint", help="checkpoint written by `appmult-fx retrain`")
    p.add_argument("out", help="output directory")
    p.add_argument(
        "--portable",
        action="store_true",
        help="also write model_portable.onnx (standard ONNX ops only)",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17, default 18)")
    p.add_argument(
        "--verify",
        type=int,
        default=0,
        metavar="N",
        help="run the first N test inputs (N >= 0; at most the whole test set) in onnxruntime "
        "and compare with PyTorch (exit 1 on mismatch)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-5,
        help="largest accepted difference relative to the logits' range (default 1e-5)",
    )
    p.set_defaults(func=_run)
