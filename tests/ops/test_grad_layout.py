"""Weight gradients of converted layers come back in the parameter's layout (no copy in
AccumulateGrad, no DDP `grad strides do not match bucket view strides`), also under a 2-process
gloo DistributedDataParallel run on the CPU."""

from __future__ import annotations

import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import appmult_fx as amx


def _model() -> nn.Module:
    """3x3, grouped, 1x1 and 1-D convolutions and linears (the 1x1 case used to differ)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, groups=2),
        nn.Conv2d(4, 6, 1),
        nn.Flatten(2),
        nn.Conv1d(6, 5, 1),
        nn.Flatten(),
        nn.Linear(5 * 16, 7),
        nn.Linear(7, 3),
    )


@pytest.mark.parametrize("gradient", ["lut", "ste"])
def test_weight_grads_have_the_parameter_strides(gradient: str) -> None:
    gm = amx.convert(_model(), amx.Spec().set_global("mul7u_exact"), gradient=gradient)
    gm(torch.randn(2, 3, 8, 8)).sum().backward()
    params = dict(gm.named_parameters())
    assert any(p.dim() == 4 and p.shape[2:] == (1, 1) for p in params.values())
    for name, p in params.items():
        assert p.grad is not None and p.grad.stride() == p.stride(), (name, p.grad.stride())


def _ddp_worker(rank: int, port: int, queue) -> None:  # noqa: ANN001
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    gm = amx.convert(_model(), amx.Spec().set_global("mul7u_exact"), gradient="lut")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ddp = nn.parallel.DistributedDataParallel(gm)
        for _ in range(2):
            ddp(torch.randn(2, 3, 8, 8)).sum().backward()
    queue.put((rank, [str(w.message) for w in caught]))
    dist.barrier()  # neither rank tears gloo down while the other still uses it
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gloo_reports_no_grad_stride_mismatch() -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    codes = [p.exitcode for p in procs]
    assert sorted(results) == [0, 1] and codes == [0, 0], (sorted(results), codes)
    for messages in results.values():
        assert not [m for m in messages if "strides do not match" in m], messages
