"""The retraining workflow: float baseline, conversion + calibration + retraining, comparison.

- :func:`train_float` trains a reference (or torchvision) model and saves a float checkpoint
  that records how to rebuild the model and its data.
- :func:`retrain` loads such a checkpoint, converts it with a spec (``amx.convert``),
  calibrates the activation observers on training batches, evaluates the "initial" accuracy,
  retrains with LUT or STE gradients and writes a checkpoint and a JSON report.

The comparison over multipliers x seeds x gradient modes is :func:`.compare.compare`.
"""

from __future__ import annotations

import hashlib
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from appmult_fx import __version__

from .checkpoint import CheckpointError, load_model_state
from .data import dataset_info, load_dataset
from .models import build_model
from .paths import refuse_overwriting_inputs
from .report import write_json
from .train import (
    TrainConfig,
    evaluate,
    first_batch,
    fit,
    load_checkpoint,
    make_loader,
    rank_and_world,
    resolve_device,
    seed_everything,
)


def datasets(data: dict[str, Any]) -> tuple[Dataset, Dataset, Dataset]:
    """``(augmented train, plain train, test)`` for a checkpoint's ``data`` record."""
    kw = {"root": data.get("root"), "image_size": data.get("image_size")}
    return (
        load_dataset(data["name"], split="train", augment=True, **kw),
        load_dataset(data["name"], split="train", augment=False, **kw),
        load_dataset(data["name"], split="test", **kw),
    )


def train_float(
    model: str,
    dataset: str,
    cfg: TrainConfig,
    *,
    data_root: str | None = None,
    image_size: int | None = None,
    resume: bool = False,
    resume_override: bool = False,
) -> dict[str, Any]:
    """Train a float baseline; ``cfg.checkpoint`` receives the checkpoint. Returns the report.

    ``resume`` continues from ``cfg.checkpoint`` when it exists (refused when the arguments
    differ from the checkpoint's, unless ``resume_override``)."""
    info = dataset_info(dataset, data_root, image_size)
    data = {"name": dataset, "root": _abs(data_root), "image_size": image_size}
    model_args = {
        "name": model,
        "in_channels": info.channels,
        "num_classes": info.num_classes,
        "image_size": info.image_size,
    }
    seed_everything(cfg.seed)
    net = build_model(**model_args)
    train_aug, _, test = datasets(data)
    cfg = replace(cfg, meta={"kind": "float", "model_args": model_args, "data": data})
    state = _resume_state(cfg, resume)
    start = time.perf_counter()
    history = fit(net, train_aug, test, cfg, resume=state, resume_override=resume_override)
    return {
        "kind": "float",
        "model": model,
        "dataset": dataset,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "final_acc": history[-1]["test_acc"] if history else None,
        "history": history,
        "wall_time_s": time.perf_counter() - start,
        "checkpoint": cfg.checkpoint,
        **run_environment(cfg),
    }


def load_float_model(checkpoint: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The float model stored by :func:`train_float` and the checkpoint dict."""
    ck = load_checkpoint(checkpoint)
    if ck.get("kind") != "float":
        raise ValueError(
            f"{checkpoint}: not a float checkpoint of `appmult-fx train` (kind={ck.get('kind')!r})"
        )
    model = build_model(**ck["model_args"])
    load_model_state(model, ck["model"], checkpoint)
    return model, ck


def make_spec(spec_file: str | None = None, multiplier: str | None = None) -> Any:
    """A conversion spec from a JSON/TOML file or a ``--multiplier`` name/path (exactly one)."""
    from appmult_fx import Spec

    if (spec_file is None) == (multiplier is None):
        raise ValueError("give exactly one of --spec FILE or --multiplier NAME_OR_PATH")
    if spec_file is not None:
        return Spec.from_file(spec_file)
    return Spec().set_global(multiplier)


def spec_file_record(path: str | Path) -> dict[str, Any]:
    """``{"file", "sha256", "content"}`` of a spec file (absolute path, the sha256 of its bytes,
    its text): what a retrained checkpoint records, so that the model it holds is rebuilt from
    the spec it was trained with, and an edited file is noticed."""
    raw = Path(path).expanduser().read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a valid spec file: not UTF-8 text ({exc})") from None
    return {"file": _abs(path), "sha256": hashlib.sha256(raw).hexdigest(), "content": content}


def spec_from_source(spec_source: dict[str, Any], where: str | Path | None = None) -> Any:
    """The conversion spec of a ``spec_source`` (``{"multiplier": ...}`` or a spec file's
    record, :func:`spec_file_record`).

    A recorded spec file is rebuilt from the recorded content; the file itself must still hold
    that content (else :class:`CheckpointError` naming ``where``, the checkpoint); a missing
    file is only a warning. A record without content (a checkpoint written before contents were
    recorded) reads the file as it is now, with a warning that it may have changed."""
    file, content = spec_source.get("file"), spec_source.get("content")
    if file is None or content is None:
        if file is not None:
            warnings.warn(
                f"appmult-fx: {where or 'checkpoint'} records only the path of its spec file "
                f"{file} (written before checkpoints recorded the spec's content): rebuilding "
                "from the file as it is now, which cannot be checked against the one the model "
                "was trained with",
                stacklevel=2,
            )
        return make_spec(file, spec_source.get("multiplier"))
    recorded = spec_source.get("sha256")
    if recorded != hashlib.sha256(content.encode("utf-8")).hexdigest():
        raise CheckpointError(
            f"{where or 'checkpoint'}: the recorded copy of spec file {file} does not match its "
            "recorded sha256"
        )
    path = Path(file)
    if path.is_file():
        now = hashlib.sha256(path.read_bytes()).hexdigest()
        if now != recorded:
            raise CheckpointError(
                f"{where or 'checkpoint'}: spec file {file} changed since the checkpoint was "
                f"written (sha256 {recorded[:12]}... recorded, {now[:12]}... on disk); the model "
                "would be rebuilt with another spec than it was trained with: restore the file "
                "(the checkpoint holds its content under spec_source) or retrain"
            )
    else:
        warnings.warn(
            f"appmult-fx: spec file {file} of {where or 'the checkpoint'} is gone; rebuilding "
            "from the copy recorded in the checkpoint",
            stacklevel=2,
        )
    from appmult_fx import Spec

    return Spec.from_text(content, path)


def convert_model(
    model: nn.Module,
    spec_source: dict[str, Any],
    gradient: str,
    example: torch.Tensor,
    where: str | Path | None = None,
) -> nn.Module:
    """``amx.convert`` of ``model`` with the spec described by ``spec_source``
    (:func:`spec_from_source`; ``where`` names the checkpoint it comes from); one sample of
    ``example`` gives the records' shapes, so their multiply counts are per sample."""
    from appmult_fx import convert

    spec = spec_from_source(spec_source, where)
    return convert(model, spec, gradient=gradient, example_inputs=(example[:1],))


def training_modes(gm: nn.Module) -> list[str]:
    """How the approximate layers of ``gm`` take gradients: ``"lut gradients"`` /
    ``"ste gradients"`` (integer multipliers), ``"approximate FP backward"`` /
    ``"exact FP backward"`` (floating-point ones)."""
    from appmult_fx import layers

    return sorted(
        {
            f"{r.gradient} gradients" if r.gradient else f"{r.backward} FP backward"
            for r in layers(gm)
            if r.multiplier is not None and (r.gradient or r.backward)
        }
    )


def multipliers_used(gm: nn.Module) -> list[dict[str, Any]]:
    """Name, sha256, bits, signedness and layer count of each multiplier in ``gm``."""
    from appmult_fx import layers

    found: dict[str, dict[str, Any]] = {}
    for rec in layers(gm):
        mult = rec.multiplier
        if mult is None:
            continue
        entry = found.setdefault(
            mult.name,
            {
                "name": mult.name,
                "sha256": getattr(mult, "sha256", None),
                "bits": rec.bits if isinstance(rec.bits, int) else rec.widths,
                "signed": rec.signed,
                "layers": 0,
            },
        )
        entry["layers"] += 1
    return list(found.values())


def retrain_model(
    float_checkpoint: str | Path,
    spec_source: dict[str, Any],
    cfg: TrainConfig,
    *,
    gradient: str = "lut",
    calib_batches: int | None = None,
    resume: bool = False,
    resume_override: bool = False,
    report_path: str | Path | None = None,
    label: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Convert, calibrate, evaluate, retrain; returns the converted model and the run report
    (also written to ``report_path``).

    ``spec_source`` is ``{"file": path}`` or ``{"multiplier": name_or_path}``; a spec file is
    recorded with its sha256 and content (:func:`spec_file_record`). ``cfg.checkpoint`` and
    ``report_path`` may not be the same file as an input (the float checkpoint, the spec or
    multiplier file) or as each other (``ValueError``, before anything is read or written).
    """
    if calib_batches is not None and calib_batches < 1:
        raise ValueError(f"calibration batches must be >= 1, got {calib_batches}")
    if (spec_source.get("file") is None) == (spec_source.get("multiplier") is None):
        raise ValueError("give exactly one of --spec FILE or --multiplier NAME_OR_PATH")
    mult_ref = spec_source.get("multiplier")
    refuse_overwriting_inputs(
        [("--out", cfg.checkpoint), ("--report", report_path)],
        [
            ("--checkpoint", float_checkpoint),
            ("--spec", spec_source.get("file")),
            ("--multiplier", mult_ref if mult_ref and Path(mult_ref).is_file() else None),
        ],
    )
    start = time.perf_counter()
    model, ck = load_float_model(float_checkpoint)
    seed_everything(cfg.seed)
    train_aug, train_plain, test = datasets(ck["data"])
    if spec_source.get("file") is not None:
        spec_source = spec_file_record(spec_source["file"])
    else:
        spec_source = {k: _abs(v) if Path(str(v)).exists() else v for k, v in spec_source.items()}
    device = resolve_device(cfg.device)
    float_acc = evaluate(model, test, batch_size=cfg.eval_batch_size, device=device)["acc"]
    gm = convert_model(model, spec_source, gradient, first_batch(train_plain))
    state = _resume_state(cfg, resume)
    if state is not None:
        initial = state["initial_acc"]
    else:
        calibrate_model(gm, train_plain, cfg, calib_batches)
        initial = evaluate(gm, test, batch_size=cfg.eval_batch_size, device=device)["acc"]
    cfg = replace(
        cfg,
        meta={
            "kind": "retrain",
            "model_args": ck["model_args"],
            "data": ck["data"],
            "spec_source": spec_source,
            "gradient": gradient,
            "initial_acc": initial,
            "float_acc": float_acc,
            "float_checkpoint": _abs(float_checkpoint),
        },
    )
    history = fit(gm, train_aug, test, cfg, resume=state, resume_override=resume_override)
    report = {
        "kind": "retrain",
        "label": label or _label(spec_source),
        "model": ck["model_args"]["name"],
        "dataset": ck["data"]["name"],
        "spec_source": spec_source,
        "multipliers": multipliers_used(gm),
        "gradient": gradient,
        "training_modes": training_modes(gm),
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "float_acc": float_acc,
        "initial_acc": initial,
        "final_acc": history[-1]["test_acc"] if history else initial,
        "best_acc": max([h["test_acc"] for h in history], default=initial),
        "history": history,
        "wall_time_s": time.perf_counter() - start,
        "float_checkpoint": _abs(float_checkpoint),
        "checkpoint": cfg.checkpoint,
        **run_environment(cfg),
    }
    if report_path is not None and rank_and_world()[0] == 0:
        write_json(report_path, report)
    return gm, report


def retrain(
    float_checkpoint: str | Path, spec_source: dict[str, Any], cfg: TrainConfig, **kwargs: Any
) -> dict[str, Any]:
    """:func:`retrain_model` without the model: convert, calibrate, retrain; returns the report."""
    return retrain_model(float_checkpoint, spec_source, cfg, **kwargs)[1]


@torch.no_grad()
def calibrate_model(gm: nn.Module, dataset: Dataset, cfg: TrainConfig, limit: int | None) -> None:
    """Run the observers over (the first ``limit``) training batches, in the same order on
    every rank so that all ranks end with the same ranges; nothing to do for a model without
    observers (floating-point multipliers only)."""
    from appmult_fx import calibrate, quantizers

    if not quantizers(gm):
        return

    device = resolve_device(cfg.device)
    gm.to(device)
    loader = make_loader(
        dataset, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=-1, shard=False
    )

    def batches():
        for i, (x, _) in enumerate(loader):
            if limit is not None and i >= limit:
                return
            yield x.to(device)

    calibrate(
        gm, batches(), progress=not cfg.quiet and sys.stderr.isatty() and rank_and_world()[0] == 0
    )


def load_retrained(checkpoint: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The converted model stored by :func:`retrain` (rebuilt, converted, weights loaded)."""
    ck = load_checkpoint(checkpoint)
    if ck.get("kind") != "retrain":
        raise ValueError(f"{checkpoint}: not a checkpoint of `appmult-fx retrain`")
    _, _, test = datasets(ck["data"])
    model = build_model(**ck["model_args"])
    gm = convert_model(model, ck["spec_source"], ck["gradient"], first_batch(test), checkpoint)
    load_model_state(gm, ck["model"], checkpoint)
    return gm, ck


def evaluate_checkpoint(
    checkpoint: str | Path, device: str = "cpu", batch_size: int = 256
) -> dict[str, Any]:
    """Test loss and accuracy of a float or retrained checkpoint on its own data set."""
    kind = load_checkpoint(checkpoint).get("kind")
    if kind == "float":
        model, ck = load_float_model(checkpoint)
    elif kind == "retrain":
        model, ck = load_retrained(checkpoint)
    else:
        raise ValueError(f"{checkpoint}: unknown checkpoint kind {kind!r}")
    _, _, test = datasets(ck["data"])
    result = evaluate(model, test, batch_size=batch_size, device=device)
    return {
        "checkpoint": str(checkpoint),
        "kind": kind,
        "dataset": ck["data"]["name"],
        "test_examples": len(test),
        **result,
    }


def _resume_state(cfg: TrainConfig, resume: bool) -> dict[str, Any] | None:
    if resume and cfg.checkpoint and Path(cfg.checkpoint).is_file():
        return load_checkpoint(cfg.checkpoint)
    return None


def _label(spec_source: dict[str, Any]) -> str:
    ref = spec_source.get("multiplier") or spec_source.get("file")
    return Path(str(ref)).name if ref else "spec"


def _abs(path: Any) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def run_environment(cfg: TrainConfig) -> dict[str, Any]:
    """Where a run happens (device, world size, torch and appmult-fx versions), for reports."""
    dev = str(resolve_device(cfg.device))
    name = (
        torch.cuda.get_device_name()
        if dev.startswith("cuda")
        else f"cpu x{torch.get_num_threads()}"
    )
    return {
        "device": name,
        "world_size": rank_and_world()[1],
        "torch": torch.__version__,
        "appmult_fx": __version__,
    }
