"""The attack on resume: interrupt a run at every point of a step (and during the end-of-epoch
evaluation), resume from the checkpoint, and compare the final weights bit for bit with an
uninterrupted run; then a fault-injection chain of random interruptions."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import appmult_fx as amx
from appmult_fx.app.train import (
    CheckpointError,
    ResumeMismatchError,
    TrainConfig,
    fit,
    load_checkpoint,
    save_checkpoint,
)

CFG = TrainConfig(epochs=3, batch_size=8, quiet=True, eval_batch_size=8, lr=3e-3)
POINTS = ("fetch", "forward_in", "forward_out", "backward", "pre_step", "post_step", "eval")


class Fault:
    """Raises ``KeyboardInterrupt`` at the ``at``-th event of kind ``kind`` (once)."""

    def __init__(self, kind: str | None = None, at: int = 0) -> None:
        self.kind, self.at, self.count = kind, at, 0

    def trip(self, kind: str) -> None:
        if kind != self.kind:
            return
        self.count += 1
        if self.count == self.at:
            self.kind = None
            raise KeyboardInterrupt


class Noisy(Dataset):
    """Fixed points plus noise from torch's global generator (like augmentation)."""

    def __init__(self, n: int, fault: Fault, kind: str, noise: float) -> None:
        g = torch.Generator().manual_seed(n)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, :4].argmax(1) + (self.x[:, 4] > 0)) % 4
        self.fault, self.kind, self.noise = fault, kind, noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.fault.trip(self.kind)
        return self.x[i] + self.noise * torch.randn(8), int(self.y[i])


def _model(fault: Fault, seed: int = 0) -> nn.Module:
    """A converted MLP with dropout: observers, LUT layers and global-RNG draws in forward."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Dropout(0.25), nn.Linear(12, 4))
    gm = amx.convert(model, amx.Spec().set_global("mul8u_trunc4"), gradient="ste")
    amx.calibrate(gm, [torch.randn(16, 8)], progress=False)

    def before(module, args):
        if module.training:
            fault.trip("forward_in")

    def after(module, args, out):
        if module.training:
            fault.trip("forward_out")
            out.register_hook(lambda g: fault.trip("backward"))

    gm.register_forward_pre_hook(before)
    gm.register_forward_hook(after)
    return gm


def _run(fault: Fault, cfg: TrainConfig, resume=None, seed: int = 0) -> nn.Module:
    model = _model(fault, seed)
    opt_hooks = []
    orig = torch.optim.Adam.__init__

    def patched(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        opt_hooks.append(self.register_step_pre_hook(lambda *a: fault.trip("pre_step")))
        opt_hooks.append(self.register_step_post_hook(lambda *a: fault.trip("post_step")))

    train, test = Noisy(48, fault, "fetch", 0.3), Noisy(16, fault, "eval", 0.0)
    torch.manual_seed(cfg.seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.Adam, "__init__", patched)
        fit(model, train, test, cfg, resume=resume)
    return model


@pytest.fixture(scope="module")
def straight() -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    return _run(Fault(), CFG).state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _interrupted(fault: Fault, cfg: TrainConfig, resume=None) -> dict:
    with pytest.raises(KeyboardInterrupt):
        _run(fault, cfg, resume)
    return load_checkpoint(cfg.checkpoint)


@pytest.mark.parametrize("point", POINTS)
def test_interrupt_at_each_point_resumes_bit_exact(tmp_path: Path, straight, point) -> None:
    cfg = replace(CFG, checkpoint=str(tmp_path / "run.pt"))
    # the 8th event of its kind: in the second epoch for the step events, the second
    # epoch's evaluation for "eval" (after the milestone's sched.step())
    at = 8 if point != "eval" else 20
    state = _interrupted(Fault(point, at), cfg)
    final = _run(Fault(), cfg, resume=state, seed=123)  # weights come from the checkpoint
    _same(straight, final.state_dict())
    ck = load_checkpoint(cfg.checkpoint)
    assert [h["lr"] for h in ck["history"]] == [3e-3, 1.5e-3, 7.5e-4]  # sched.step() once each


def test_random_fault_injection_chain_resumes_bit_exact(tmp_path: Path, straight) -> None:
    """Interrupt one run five times at random points and event counts, resuming each time."""
    cfg = replace(CFG, checkpoint=str(tmp_path / "chain.pt"))
    rng = random.Random(14)
    state = None
    for _ in range(5):
        fault = Fault(rng.choice(POINTS), rng.randint(1, 6))
        state = _interrupted(fault, cfg, state)
    final = _run(Fault(), cfg, resume=state, seed=99)
    _same(straight, final.state_dict())


def test_resume_refuses_changed_arguments(tmp_path: Path) -> None:
    cfg = replace(CFG, checkpoint=str(tmp_path / "run.pt"))
    state = _interrupted(Fault("post_step", 3), cfg)
    for change in ({"seed": 1}, {"lr": 1e-2}, {"epochs": 5}, {"batch_size": 4}):
        with pytest.raises(ResumeMismatchError, match="cannot resume with other arguments"):
            _run(Fault(), replace(cfg, **change), resume=state)
    other = replace(cfg, meta={"spec_source": {"multiplier": "mul8u_trunc2"}})
    with pytest.raises(ResumeMismatchError, match="spec_source"):
        _run(Fault(), other, resume=state)
    with pytest.warns(UserWarning, match=r"changed arguments \(lr: 0.003 -> 0.002\)"):
        torch.manual_seed(0)
        fit(
            _model(Fault()),
            Noisy(48, Fault(), "fetch", 0.3),
            Noisy(16, Fault(), "eval", 0.0),
            replace(cfg, lr=2e-3),
            resume=state,
            resume_override=True,
        )


def test_checkpoint_with_flipped_bytes_or_truncated_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(1000.0)}, "epoch": 1})
    assert load_checkpoint(path)["epoch"] == 1
    data = bytearray(path.read_bytes())
    data[-200] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="content hash mismatch"):
        load_checkpoint(path)
    save_checkpoint(path, {"epoch": 1})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated, corrupted or was modified"):
        load_checkpoint(path)
    torch.save({"epoch": 1}, path)
    with pytest.raises(CheckpointError, match="not an appmult-fx checkpoint"):
        load_checkpoint(path)


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path: Path) -> None:
    cfg = replace(CFG, checkpoint=str(tmp_path / "run.pt"))
    state = _interrupted(Fault("post_step", 2), cfg)
    state["model"] = nn.Linear(3, 3).state_dict()
    with pytest.raises(CheckpointError, match="does not fit this model"):
        _run(Fault(), cfg, resume=state)
