"""bench/saved_memory.py: the bytes a training step keeps for its backward, against a count made
apart (the float model's saved activations summed by hand)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from tests.bench_scripts import load_bench_script


def _module():
    return load_bench_script("saved_memory")


def test_saved_bytes_count_each_storage_once() -> None:
    """``relu(x) @ w`` keeps ``x``'s ReLU output once (relu and mm both save it) and ``w``."""
    x = torch.randn(8, 16)
    weight = nn.Parameter(torch.randn(16, 4))
    got = _module().saved_bytes(lambda t: torch.relu(t) @ weight, x)
    assert got == (8 * 16 + 16 * 4) * 4


def test_a_lut_step_keeps_what_an_ste_step_keeps() -> None:
    """The LUT model's convs keep no padded copy of their ReLU inputs: within the gradient
    tables (a few KiB) of the STE model, and above the float model (codes and masks)."""
    mib = _module().saved_memory(batch=2)
    assert mib["float"] < mib["ste"]
    assert mib["lut"] == pytest.approx(mib["ste"], abs=1.0)


def test_bad_arguments_are_refused(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["saved_memory.py", "--batch", "0"])
    with pytest.raises(SystemExit):
        _module().main()
    assert "--batch >= 1" in capsys.readouterr().err
