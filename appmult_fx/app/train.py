"""The training and evaluation loops: seeded, resumable, interruptible, DDP-aware.

``fit(model, train_set, test_set, config)`` trains with the seed's recipe (Adam, lr halved at
1/3 and 2/3 of the epochs), evaluates after every epoch and returns the per-epoch history.
With ``config.checkpoint`` it writes a checkpoint after every epoch and on any exception,
Ctrl-C included (then re-raises it); ``resume=`` continues from such a checkpoint bit for bit
on the CPU, whatever the point of interruption: after every optimizer step (and before the
end-of-epoch ``sched.step()`` and evaluation) the loop *commits* a copy of its whole state
(model, optimizer, scheduler, counters, epoch sums, RNG state before the next batch is drawn),
and an interruption writes that last committed state, never the half-done step; the resumed
run replays the step from the same batch and random draws. The batch order of an epoch comes
from a generator seeded with ``(seed, epoch)``, the augmentation draws from torch's global
generator, whose state the commit holds. ``resume`` refuses a checkpoint whose recorded
configuration differs from the current one (:class:`ResumeMismatchError`) unless
``resume_override=True``.

Checkpoint files start with a header line holding the sha256 of the payload (``torch.save``
bytes); :func:`load_checkpoint` verifies it, so a truncated or altered file is a clear
:class:`CheckpointError`, never a silently different model.

Under ``torchrun`` (``WORLD_SIZE`` > 1) call :func:`init_distributed` first: ``fit`` then shards
every epoch across ranks, wraps the model in ``DistributedDataParallel`` and keeps activation
observers identical on all ranks (:func:`sync_observers`).
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from .checkpoint import (
    CheckpointError,
    ResumeMismatchError,
    check_resume,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from .train_config import TrainConfig

__all__ = [
    "CheckpointError",
    "ResumeMismatchError",
    "TrainConfig",
    "evaluate",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
]


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python and numpy generators."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; under torchrun on CUDA, the local rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA GPU is available here (use cpu or auto)")
    if device.type == "cuda" and device.index is None and dist.is_initialized():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by torchrun; returns ``(rank, world_size)``.

    Uses NCCL when CUDA is available, else gloo. Without ``WORLD_SIZE`` > 1 it does nothing.
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation seeded by ``(seed, epoch)`` (or the identity),
    sharded ``rank::world`` from ``start`` on; a shuffled one is first padded to a multiple of
    ``world`` (equal shard lengths), the identity is not (evaluation sees each example once)."""

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool,
        seed: int,
        epoch: int,
        rank: int = 0,
        world: int = 1,
        start: int = 0,
    ) -> None:
        if shuffle:
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        if world > 1 and shuffle:  # training: equal step counts on every rank (DDP needs it)
            order += order[: (-n) % world]
        self.indices = order[rank::world][start:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    shard: bool = True,
) -> DataLoader:
    """A single-process DataLoader over one epoch (sharded across ranks when ``shard``)."""
    rank, world = rank_and_world() if shard else (0, 1)
    sampler = EpochSampler(
        len(dataset),
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        rank=rank,
        world=world,
        start=start_batch * batch_size,
    )
    gen = torch.Generator().manual_seed(seed + epoch)  # keeps DataLoader off the global RNG
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=gen)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _progress(iterable: Any, total: int, desc: str, quiet: bool) -> tqdm:
    disable = quiet or not sys.stderr.isatty() or rank_and_world()[0] != 0
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False, dynamic_ncols=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    quiet: bool = True,
    desc: str = "eval",
) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy (0..1) on ``dataset`` (eval mode, restored after;
    the model is moved to ``device``); sharded across ranks and summed when distributed."""
    model = _unwrap(model)
    device = torch.device(device)
    model.to(device)
    was_training = model.training
    model.eval()
    loader = make_loader(dataset, batch_size, shuffle=False)
    total = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    try:
        for x, y in _progress(loader, len(loader), desc, quiet):
            x, y = x.to(device), y.to(device)
            out = model(x)
            total[0] += nn.functional.cross_entropy(out, y, reduction="sum").double()
            total[1] += (out.argmax(1) == y).sum()
            total[2] += y.numel()
    finally:
        model.train(was_training)
    if rank_and_world()[1] > 1:
        dist.all_reduce(total)
    count = max(total[2].item(), 1.0)
    return {"loss": total[0].item() / count, "acc": total[1].item() / count}


def observer_modules(model: nn.Module) -> list[nn.Module]:
    """The activation observers (moving-average min/max quantizers) inside ``model``."""
    from appmult_fx import quantizers

    return quantizers(_unwrap(model))


@torch.no_grad()
def sync_observers(model: nn.Module) -> None:
    """Make every rank's activation ranges equal: min of the running mins, max of the maxes.

    Called after each training forward. The ranks start a step with equal ranges and each folds
    its own batch in with the same momentum (a monotone update), so the minimum over ranks of
    the updated running min equals the update with the global batch's minimum: the result is
    exactly what one process seeing the whole global batch would hold.
    """
    if rank_and_world()[1] <= 1:
        return
    for m in observer_modules(model):
        dist.all_reduce(m.min_val, op=dist.ReduceOp.MIN)
        dist.all_reduce(m.max_val, op=dist.ReduceOp.MAX)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """Adam with the given lr and a MultiStepLR at ``cfg.milestone_epochs()``."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, cfg.milestone_epochs(), gamma=cfg.lr_gamma)
    return opt, sched


StepHook = Callable[[int, int], None]


def _epoch_batches(
    train_set: Dataset, cfg: TrainConfig, epoch: int, step: int
) -> tuple[Iterator[Any], int]:
    """The batches of ``epoch`` from batch ``step`` on (at most ``cfg.max_steps_per_epoch``
    steps in the epoch) and their number."""
    loader = make_loader(
        train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, start_batch=step
    )
    total = (
        len(loader)
        if cfg.max_steps_per_epoch is None
        else max(0, min(len(loader), cfg.max_steps_per_epoch - step))
    )
    return itertools.islice(loader, total), total


def _epoch_row(
    epoch: int, sums: Tensor, test: dict[str, float], lr: float, start: float, world: int
) -> dict[str, Any]:
    """The history row of a finished epoch; training loss/accuracy over every rank's batches."""
    seen = sums.clone()
    if world > 1:
        dist.all_reduce(seen)
    n = max(seen[2].item(), 1.0)
    return {
        "epoch": epoch + 1,
        "train_loss": seen[0].item() / n,
        "train_acc": seen[1].item() / n,
        "test_loss": test["loss"],
        "test_acc": test["acc"],
        "lr": lr,
        "seconds": time.perf_counter() - start,
    }


def fit(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    cfg: TrainConfig,
    *,
    resume: dict[str, Any] | None = None,
    after_step: StepHook | None = None,
    resume_override: bool = False,
) -> list[dict[str, Any]]:
    """Train ``model`` for ``cfg.epochs`` and return the per-epoch history.

    History rows: ``epoch``, ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``, ``lr``,
    ``seconds``. ``resume`` is a checkpoint dict from an earlier run of the same configuration.
    ``after_step(epoch, step)`` runs after every optimizer step (tests use it to interrupt).
    Checkpoints hold ``model``, ``optimizer``, ``scheduler``, ``epoch`` (completed), ``step``
    (completed in the current epoch), ``history``, ``rng``, ``config`` and ``cfg.meta``.
    """
    device = resolve_device(cfg.device)
    model.to(device)
    opt, sched = make_optimizer(model, cfg)
    history: list[dict[str, Any]] = []
    epoch, step = 0, 0
    if resume is not None:
        check_resume(cfg, resume, resume_override)
        history, epoch, step = restore_training_state(model, opt, sched, resume, cfg.checkpoint)
    rank, world = rank_and_world()
    net: nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    sums = torch.zeros(3, dtype=torch.float64)
    committed: dict[str, Any] = {}

    def commit(ep: int, st: int) -> None:
        """Copy the whole state at a step boundary (what an interruption will save)."""
        if not cfg.checkpoint:
            return
        committed.clear()
        committed.update(training_state(model, opt, sched, cfg, ep, st, history, sums))

    try:
        while epoch < cfg.epochs:
            start = time.perf_counter()
            batches, total = _epoch_batches(train_set, cfg, epoch, step)
            net.train()
            sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
            if resume is not None and step > 0 and epoch == int(resume["epoch"]):
                sums = resume["epoch_sums"].clone()
            commit(epoch, step)  # before the first batch is drawn
            bar = _progress(batches, total, f"epoch {epoch + 1}/{cfg.epochs}", cfg.quiet)
            for x, y in bar:
                x, y = x.to(device), y.to(device)
                opt.zero_grad(set_to_none=True)
                out = net(x)
                loss = nn.functional.cross_entropy(out, y)
                loss.backward()
                opt.step()
                sync_observers(model)
                step += 1
                sums += torch.tensor(
                    [loss.item() * y.numel(), (out.argmax(1) == y).sum().item(), y.numel()],
                    dtype=torch.float64,
                )
                commit(epoch, step)
                bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", acc=f"{sums[1] / sums[2]:.4f}")
                if after_step is not None:
                    after_step(epoch, step)
            bar.close()
            lr = opt.param_groups[0]["lr"]
            sched.step()
            test = evaluate(
                model, test_set, batch_size=cfg.eval_batch_size, device=device, quiet=cfg.quiet
            )
            history.append(_epoch_row(epoch, sums, test, lr, start, world))
            epoch, step = epoch + 1, 0
            commit(epoch, 0)
            if cfg.checkpoint:
                save_checkpoint(cfg.checkpoint, committed)
    except BaseException as exc:
        if not committed:
            raise
        save_checkpoint(cfg.checkpoint, committed)
        if isinstance(exc, KeyboardInterrupt) and rank == 0:
            print(
                f"\ninterrupted: checkpoint saved to {cfg.checkpoint} (epoch "
                f"{committed['epoch']}, step {committed['step']}); continue with --resume",
                file=sys.stderr,
            )
        raise
    return history


def first_batch(dataset: Dataset, batch_size: int = 2) -> Tensor:
    """The first ``batch_size`` inputs of ``dataset`` stacked (example inputs for tracing)."""
    return torch.stack([dataset[i][0] for i in range(min(batch_size, len(dataset)))])
