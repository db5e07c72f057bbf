"""The training and evaluation loops: seeded, resumable, interruptible, DDP-aware.

``fit(model, train_set, test_set, config)`` trains with the seed's recipe (Adam, lr halved at
1/3 and 2/3 of the epochs), evaluates after every epoch and returns the per-epoch history.
With ``config.checkpoint`` it writes a checkpoint after every epoch and on Ctrl-C (then
re-raises ``KeyboardInterrupt``); ``resume=`` continues from such a checkpoint bit for bit on
the CPU: the batch order of an epoch comes from a generator seeded with ``(seed, epoch)``, the
augmentation draws from torch's global generator, whose state the checkpoint holds.

Under ``torchrun`` (``WORLD_SIZE`` > 1) call :func:`init_distributed` first: ``fit`` then shards
every epoch across ranks, wraps the model in ``DistributedDataParallel`` and keeps activation
observers identical on all ranks (:func:`sync_observers`).
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the seed's recipe)."""

    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    lr_gamma: float = 0.5
    milestones: tuple[float, ...] = (1 / 3, 2 / 3)
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 256
    max_steps_per_epoch: int | None = None
    quiet: bool = False
    checkpoint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def milestone_epochs(self) -> list[int]:
        """Epoch indices at which the learning rate is multiplied by ``lr_gamma``."""
        return sorted({round(f * self.epochs) for f in self.milestones} - {0} - {self.epochs})


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


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (temporary file, then rename); only rank 0 writes."""
    if rank_and_world()[0] != 0:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by this module (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    return torch.load(path, map_location="cpu", weights_only=True)


StepHook = Callable[[int, int], None]


def fit(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    cfg: TrainConfig,
    *,
    resume: dict[str, Any] | None = None,
    after_step: StepHook | None = None,
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
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        history, epoch, step = list(resume["history"]), int(resume["epoch"]), int(resume["step"])
        _set_rng_state(resume["rng"])
    rank, world = rank_and_world()
    net: nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    sums = torch.zeros(3, dtype=torch.float64)

    def checkpoint(ep: int, st: int) -> None:
        if cfg.checkpoint:
            save_checkpoint(
                cfg.checkpoint,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": ep,
                    "step": st,
                    "history": history,
                    "epoch_sums": sums,
                    "rng": _rng_state(),
                    "config": _plain({k: v for k, v in asdict(cfg).items() if k != "meta"}),
                    **cfg.meta,
                },
            )

    try:
        while epoch < cfg.epochs:
            start = time.perf_counter()
            loader = make_loader(
                train_set,
                cfg.batch_size,
                shuffle=True,
                seed=cfg.seed,
                epoch=epoch,
                start_batch=step,
            )
            total = (
                len(loader)
                if cfg.max_steps_per_epoch is None
                else max(0, min(len(loader), cfg.max_steps_per_epoch - step))
            )
            net.train()
            sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
            if resume is not None and step > 0 and epoch == int(resume["epoch"]):
                sums = resume["epoch_sums"].clone()
            bar = _progress(
                itertools.islice(loader, total), total, f"epoch {epoch + 1}/{cfg.epochs}", cfg.quiet
            )
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
                bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", acc=f"{sums[1] / sums[2]:.4f}")
                if after_step is not None:
                    after_step(epoch, step)
            bar.close()
            lr = opt.param_groups[0]["lr"]
            sched.step()
            test = evaluate(
                model, test_set, batch_size=cfg.eval_batch_size, device=device, quiet=cfg.quiet
            )
            seen = sums.clone()
            if world > 1:  # training loss/accuracy over every rank's batches
                dist.all_reduce(seen)
            n = max(seen[2].item(), 1.0)
            row = {
                "epoch": epoch + 1,
                "train_loss": seen[0].item() / n,
                "train_acc": seen[1].item() / n,
                "test_loss": test["loss"],
                "test_acc": test["acc"],
                "lr": lr,
                "seconds": time.perf_counter() - start,
            }
            history.append(row)
            epoch, step = epoch + 1, 0
            checkpoint(epoch, 0)
    except KeyboardInterrupt:
        checkpoint(epoch, step)
        if cfg.checkpoint and rank == 0:
            print(
                f"\ninterrupted: checkpoint saved to {cfg.checkpoint} (epoch {epoch}, step {step});"
                " continue with --resume",
                file=sys.stderr,
            )
        raise
    return history


def _plain(value: Any) -> Any:
    """Checkpoint-safe copy of ``value`` (paths to str, tuples to lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def first_batch(dataset: Dataset, batch_size: int = 2) -> Tensor:
    """The first ``batch_size`` inputs of ``dataset`` stacked (example inputs for tracing)."""
    return torch.stack([dataset[i][0] for i in range(min(batch_size, len(dataset)))])
