"""bench/dead_inputs.py: the shares of exact zeros a converted ResNet-18's convs see, against
shares counted independently (``F.unfold``)."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from tests.bench_scripts import load_bench_script


def _module():
    return load_bench_script("dead_inputs")


@pytest.mark.parametrize("stride", [1, 2])
def test_im2col_shares_match_unfold(stride: int) -> None:
    torch.manual_seed(0)
    pixel_zero = torch.rand(2, 1, 7, 6) < 0.4  # whole pixels zero: every channel of them
    zero = pixel_zero.expand(2, 32, 7, 6).clone()
    zero[:, 5, 3, 2] = True  # one more zero entry, not a whole run of 16 channels
    geometry = {"stride": (stride, stride), "dilation": (1, 1), "groups": 1}
    entries, runs = _module()._im2col_shares(zero, (3, 3), geometry)
    want_entries = F.unfold(zero.float(), 3, stride=stride).mean().item()
    want_runs = F.unfold(pixel_zero.float(), 3, stride=stride).mean().item()
    assert entries == pytest.approx(want_entries, abs=1e-6)
    assert runs == pytest.approx(want_runs, abs=1e-6)


def test_every_conv_of_the_model_is_measured() -> None:
    rows = _module().dead_input_shares(batch=2, steps=1)
    assert len(rows) == 20  # ResNet-18: 17 3x3 convs and 3 1x1 shortcuts
    for row in rows:
        assert all(0.0 <= row[key] <= 1.0 for key in row if key != "conv")
        assert row["im2col_zero_runs16"] <= row["im2col_zero"] + 1e-6
    after_relu = [row for row in rows if row["conv"] != "conv1"]
    assert min(row["input_zero"] for row in after_relu) > 0.2  # a ReLU's zeros


def test_bad_arguments_are_refused(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["dead_inputs.py", "--steps", "-1"])
    with pytest.raises(SystemExit):
        _module().main()
    assert "--steps >= 0" in capsys.readouterr().err
