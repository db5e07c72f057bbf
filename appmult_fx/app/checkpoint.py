"""Training checkpoints: atomic, content-hashed files; exact-resume argument checks.

A checkpoint file is one header line ``APPMULT-FX-CHECKPOINT v1 sha256=<hex>`` followed by the
``torch.save`` bytes of the state dict; :func:`load_checkpoint` verifies the hash before it
unpickles anything (``weights_only``), so a truncated, corrupted or altered file is a clear
:class:`CheckpointError`. :func:`check_resume` refuses to continue a run with other training
arguments than the checkpoint's unless told to (``--resume-override``).
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .train_config import TrainConfig

CHECKPOINT_MAGIC = b"APPMULT-FX-CHECKPOINT v1 sha256="


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or used: corrupted, truncated, not ours, another
    model's, or from a run with other arguments."""


class ResumeMismatchError(CheckpointError):
    """``resume`` with a configuration that differs from the checkpoint's."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (temporary file, then rename) behind a header line with the
    sha256 of its bytes; only rank 0 writes."""
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(CHECKPOINT_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n")
        f.write(payload)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain values only),
    after checking its content hash; raises :class:`CheckpointError` when it does not verify."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    head, _, payload = path.read_bytes().partition(b"\n")
    if not head.startswith(CHECKPOINT_MAGIC):
        raise CheckpointError(
            f"{path}: not an appmult-fx checkpoint (no content-hash header); expected a file "
            "written by `appmult-fx train/retrain` or amx.fit(..., TrainConfig(checkpoint=...))"
        )
    want, got = head[len(CHECKPOINT_MAGIC) :].decode("ascii", "replace"), ""
    got = hashlib.sha256(payload).hexdigest()
    if got != want:
        raise CheckpointError(
            f"{path}: content hash mismatch (header {want[:16]}..., bytes {got[:16]}...): the "
            "checkpoint is truncated, corrupted or was modified; refusing to load it"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(state).__name__}")
    return state


def checkpoint_digest(path: str | Path) -> str:
    """The sha256 in a checkpoint's header line (the hash of its content), without loading it;
    :func:`load_checkpoint` checks that it matches."""
    with open(path, "rb") as f:
        head = f.readline().rstrip(b"\n")
    if not head.startswith(CHECKPOINT_MAGIC):
        raise CheckpointError(f"{path}: not an appmult-fx checkpoint (no content-hash header)")
    return head[len(CHECKPOINT_MAGIC) :].decode("ascii", "replace")


def load_model_state(model: nn.Module, state: dict[str, Any], where: str | Path) -> None:
    """``model.load_state_dict(state)``, with a :class:`CheckpointError` naming ``where`` when
    the checkpoint belongs to another model (missing, unexpected or mis-shaped tensors) or
    holds LUT tables that differ from the model's multipliers."""
    try:
        model.load_state_dict(state)
    except ValueError as exc:  # LutIntegrityError: a table that is not the multiplier's
        raise CheckpointError(f"{where}: {exc}") from None
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"{where}: the checkpoint does not fit this model ({first[0] if first else exc}"
            f"{' ...' if len(first) > 1 else ''}); was it written for another model, data set "
            "or multiplier spec?"
        ) from None


# configuration fields a resumed run must share with the checkpoint to continue it exactly
RESUME_FIELDS = (
    "epochs",
    "batch_size",
    "lr",
    "lr_gamma",
    "milestones",
    "weight_decay",
    "seed",
    "max_steps_per_epoch",
)
RESUME_META_IGNORED = ("initial_acc", "float_acc")


def resume_mismatches(cfg: TrainConfig, state: dict[str, Any]) -> list[str]:
    """``"field: checkpoint -> now"`` for each training argument that differs from ``state``'s."""
    now = plain({k: getattr(cfg, k) for k in RESUME_FIELDS})
    then = state.get("config", {})
    out = [f"{k}: {then.get(k)!r} -> {now[k]!r}" for k in RESUME_FIELDS if then.get(k) != now[k]]
    meta = plain(cfg.meta)
    for k in sorted(set(meta) - set(RESUME_META_IGNORED)):
        if k == "spec_source" and isinstance(state.get(k), dict) and isinstance(meta[k], dict):
            out.extend(spec_source_mismatches(state[k], meta[k]))
        elif state.get(k) != meta[k]:
            out.append(f"{k}: {state.get(k)!r} -> {meta[k]!r}")
    return out


def spec_source_mismatches(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """How the spec of a resumed run differs from the checkpoint's: another spec file or
    multiplier, or the same spec file with other content (its sha256). A checkpoint that
    records only the spec file's path (older than content recording) cannot be checked: a
    warning says so."""
    if "file" not in then or "file" not in now:
        return [] if then == now else [f"spec_source: {then!r} -> {now!r}"]
    if then["file"] != now["file"]:
        return [f"spec file: {then['file']} -> {now['file']}"]
    if then.get("sha256") is None:
        warnings.warn(
            f"appmult-fx: the checkpoint records only the path of spec file {then['file']} "
            "(written before checkpoints recorded the spec's content): cannot check whether "
            "the file changed since",
            stacklevel=4,
        )
        return []
    if then["sha256"] != now.get("sha256"):
        return [
            f"spec file {now['file']}: content changed since the checkpoint (sha256 "
            f"{then['sha256'][:12]}... -> {str(now.get('sha256'))[:12]}...)"
        ]
    return []


def check_resume(cfg: TrainConfig, state: dict[str, Any], override: bool) -> None:
    """Refuse (or with ``override`` warn about) resuming ``state`` with changed arguments."""
    diffs = resume_mismatches(cfg, state)
    if not diffs:
        return
    text = "; ".join(diffs)
    if not override:
        raise ResumeMismatchError(
            f"{cfg.checkpoint or 'checkpoint'}: cannot resume with other arguments ({text}); "
            "rerun with the checkpoint's arguments, or pass --resume-override "
            "(resume_override=True) to continue with the new ones (not reproducible)"
        )
    warnings.warn(f"appmult-fx: resuming with changed arguments ({text})", stacklevel=3)


def rng_state() -> dict[str, Any]:
    """torch's global generator states (CPU and every CUDA device)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generator states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plain(value: Any) -> Any:
    """Checkpoint-safe copy of ``value`` (paths to str, tuples to lists)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def restore_training_state(
    model: nn.Module, opt: Any, sched: Any, resume: dict[str, Any], source: str | None
) -> tuple[list[dict[str, Any]], int, int]:
    """Load a checkpoint's model, optimizer, scheduler and RNG state; its history and position
    (completed epochs, completed steps of the current epoch)."""
    load_model_state(model, resume["model"], source or "checkpoint")
    opt.load_state_dict(resume["optimizer"])
    sched.load_state_dict(resume["scheduler"])
    set_rng_state(resume["rng"])
    return list(resume["history"]), int(resume["epoch"]), int(resume["step"])


def training_state(
    model: nn.Module,
    opt: Any,
    sched: Any,
    cfg: TrainConfig,
    epoch: int,
    step: int,
    history: list[dict[str, Any]],
    sums: torch.Tensor,
) -> dict[str, Any]:
    """A deep copy of the whole training state at a step boundary (a checkpoint's content)."""
    state = copy.deepcopy(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch,
            "step": step,
            "history": history,
            "epoch_sums": sums,
            "rng": rng_state(),
        }
    )
    state["config"] = plain({k: v for k, v in asdict(cfg).items() if k != "meta"})
    state.update(cfg.meta)
    return state
