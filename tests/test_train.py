"""Training loop: schedule, seeded reproducibility, bit-exact resume after Ctrl-C, DDP equality,
and retraining that recovers accuracy after an aggressive multiplier."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Subset

import appmult_fx as amx
from appmult_fx.app.data import load_dataset
from appmult_fx.app.models import build_model
from appmult_fx.app.train import EpochSampler, TrainConfig, evaluate, fit, load_checkpoint

CFG = TrainConfig(epochs=2, batch_size=32, max_steps_per_epoch=6, quiet=True, eval_batch_size=128)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: fast and steady on small shared machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data() -> tuple[Subset, Subset]:
    train = load_dataset("digits", split="train", augment=True)
    test = load_dataset("digits", split="test")
    return Subset(train, range(256)), Subset(test, range(128))


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("lenet5", 1, 10, 8)


def aggressive_multiplier() -> amx.Multiplier:
    """7-bit unsigned: products truncated to multiples of 128 plus a constant 300 (a large
    error where products are small, like the seed's resub_als tables), exact gradients."""
    v = torch.arange(128)  # the unsigned 7-bit operand values
    table = (((v[:, None] * v[None, :]) >> 7 << 7) + 300).clamp(max=2**14 - 1)  # 14 output bits
    return amx.Multiplier(
        "mul7u_trunc7_bias300",
        7,
        False,
        table,
        v[None, :].expand(128, 128).float(),
        v[:, None].expand(128, 128).float(),
    )


def test_milestones_follow_the_seed_recipe() -> None:
    assert TrainConfig(epochs=30).milestone_epochs() == [10, 20]
    assert TrainConfig(epochs=3).milestone_epochs() == [1, 2]
    assert TrainConfig(epochs=1).milestone_epochs() == []


def test_epoch_sampler_shards_cover_every_index_once() -> None:
    shards = [
        list(EpochSampler(10, shuffle=True, seed=1, epoch=2, rank=r, world=3)) for r in range(3)
    ]
    assert len({len(s) for s in shards}) == 1
    assert set(sum(shards, [])) == set(range(10))
    again = list(EpochSampler(10, shuffle=True, seed=1, epoch=2, rank=0, world=3))
    assert again == shards[0]
    plain = [
        list(EpochSampler(10, shuffle=False, seed=0, epoch=0, rank=r, world=3)) for r in range(3)
    ]
    assert sorted(sum(plain, [])) == list(range(10))  # evaluation: each example exactly once
    assert list(EpochSampler(10, shuffle=True, seed=1, epoch=3)) != list(
        EpochSampler(10, shuffle=True, seed=1, epoch=2)
    )


def test_same_seed_same_weights_bit_for_bit() -> None:
    train, test = _data()
    runs = []
    for _ in range(2):
        model = _model()
        torch.manual_seed(CFG.seed)
        history = fit(model, train, test, CFG)
        runs.append((model.state_dict(), history))
    (a, ha), (b, hb) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
    other = _model()
    torch.manual_seed(CFG.seed)
    fit(other, train, test, replace(CFG, seed=1))
    assert not all(torch.equal(a[k], other.state_dict()[k]) for k in a)


def test_ctrl_c_saves_a_checkpoint_and_resume_is_bit_exact(tmp_path: Path) -> None:
    train, test = _data()
    straight = _model()
    torch.manual_seed(0)
    fit(straight, train, test, CFG)

    ck = tmp_path / "run.pt"
    cfg = replace(CFG, checkpoint=str(ck))

    def interrupt(epoch: int, step: int) -> None:
        if (epoch, step) == (1, 2):
            raise KeyboardInterrupt

    first = _model()
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(first, train, test, cfg, after_step=interrupt)
    state = load_checkpoint(ck)
    assert (state["epoch"], state["step"]) == (1, 2)
    resumed = _model(seed=123)  # weights come from the checkpoint
    history = fit(resumed, train, test, cfg, resume=state)
    assert [h["epoch"] for h in history] == [1, 2]
    want = straight.state_dict()
    assert all(torch.equal(want[k], v) for k, v in resumed.state_dict().items())
    assert load_checkpoint(ck)["epoch"] == 2


def test_evaluate_restores_the_mode() -> None:
    _, test = _data()
    model = _model().train()
    result = evaluate(model, test)
    assert model.training and 0.0 <= result["acc"] <= 1.0 and result["loss"] > 0


def test_retraining_recovers_from_an_aggressive_multiplier() -> None:
    train = load_dataset("digits", split="train", augment=True)
    test = Subset(load_dataset("digits", split="test"), range(200))
    model = _model()
    torch.manual_seed(0)
    fit(model, train, test, replace(CFG, epochs=2, max_steps_per_epoch=None, lr=1e-2))
    float_acc = evaluate(model, test)["acc"]
    gm = amx.convert(model, amx.Spec().set_global(aggressive_multiplier()), gradient="lut")
    amx.calibrate(gm, (train[i][0].unsqueeze(0) for i in range(64)), progress=False)
    initial = evaluate(gm, test)["acc"]
    fit(gm, train, test, replace(CFG, epochs=1, max_steps_per_epoch=None))
    retrained = evaluate(gm, test)["acc"]
    assert initial < float_acc - 0.2, (float_acc, initial)
    assert retrained > initial + 0.2, (initial, retrained)


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from appmult_fx.ops.dispatch import use_reference

    use_reference(True)  # no kernel build race between the two processes
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        train, test = _data()
        gm = amx.convert(_model(), amx.Spec().set_global("mul6u_exact"), gradient="ste")
        amx.calibrate(gm, [train[i][0].unsqueeze(0) for i in range(8)], progress=False)
        fit(gm, train, test, replace(CFG, epochs=1, max_steps_per_epoch=3))
        torch.save(gm.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_cpu_ranks_end_with_identical_weights_and_observers(tmp_path: Path) -> None:
    mp.start_processes(
        _ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork"
    )
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    assert a.keys() == b.keys()
    observers = [k for k in a if k.endswith(("min_val", "max_val"))]
    assert observers, "the converted model should hold activation observers"
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # Training happened: the weights moved away from the (shared) initial ones.
    start = _model().state_dict()
    assert not torch.equal(a["features.0.weight"], start["features.0.weight"])


def test_config_takes_numpy_numbers_and_refuses_meaningless_values() -> None:
    import numpy as np

    cfg = TrainConfig(epochs=np.int64(4), lr=np.float32(0.01), milestones=(0.5, 1.0))
    assert cfg.milestone_epochs() == [2]  # 1.0 is the end of the run: no drop
    for bad, says in (
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1"),
        ({"lr": float("nan")}, "lr must be a finite number > 0"),
        ({"lr_gamma": 0.0}, "lr_gamma must be a finite number > 0"),
        ({"weight_decay": "0"}, "weight_decay must be a number >= 0"),
        ({"milestones": (1.5,)}, r"each in \[0, 1\]"),
    ):
        with pytest.raises(ValueError, match=says):
            TrainConfig(**bad)
