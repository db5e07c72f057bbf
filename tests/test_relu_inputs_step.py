"""bench/relu_inputs_step.py: the A/B of a LUT step with and without the ``relu_input``
arguments runs both graphs of the CIFAR ResNet-18."""

from __future__ import annotations

import sys

import pytest

from tests.bench_scripts import load_bench_script


def test_both_graphs_are_timed() -> None:
    figures = load_bench_script("relu_inputs_step").relu_input_step_figures(
        batch=2, repeats=1, rounds=1
    )
    # ResNet-18: 20 convs and the fc; every conv but the stem (it sees the image) reads a ReLU's
    # output, layer1.0.conv1 behind the disabled max-pool (an nn.Identity)
    assert figures["layers"] == 21 and figures["convs_given_relu_input"] == 19
    assert figures["with_s"] > 0 and figures["without_s"] > 0
    assert figures["ratio"] == pytest.approx(figures["with_s"] / figures["without_s"], rel=1e-2)


def test_bad_arguments_are_refused(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["relu_inputs_step.py", "--size", "8"])
    with pytest.raises(SystemExit):
        load_bench_script("relu_inputs_step").main()
    assert "--size >= 32" in capsys.readouterr().err
