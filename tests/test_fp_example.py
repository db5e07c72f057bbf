"""ApproxTrain's LeNet example, shortened: fp_mbm7 in forward and backward learns like FP32."""

from __future__ import annotations

import torch

import appmult_fx as amx
from appmult_fx.app.fp_example import ApproxTrainLeNet, train_fp
from appmult_fx.cli import main
from appmult_fx.ops.fp_layers import fp_conv2d, fp_linear


def test_network_is_approxtrains_lenet() -> None:
    net = ApproxTrainLeNet()
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [
        (32, 1, 5, 5),
        (32,),
        (32, 32, 5, 5),
        (32,),
        (1024, 512),
        (1024,),
        (10, 1024),
        (10,),
    ]
    gm = amx.convert(net, amx.Spec().set_global("fp_mbm7"), backward="approximate")
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(fp_conv2d) == 2 and targets.count(fp_linear) == 2
    assert gm(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_short_run_with_fp_mbm7_forward_and_backward_matches_fp32() -> None:
    kw = {"dataset": "digits", "image_size": 16, "epochs": 1, "batch_size": 32, "quiet": True}
    approx = train_fp("fp_mbm7", backward="approximate", **kw)
    exact = train_fp(None, **kw)
    assert approx["multiplier"] == "fp_mbm7" and exact["multiplier"] == "fp32"
    accs = (approx["final_acc"], exact["final_acc"])
    assert min(accs) > 0.7, accs  # one epoch of 45 steps; 10 classes: chance is 0.1
    assert abs(accs[0] - accs[1]) < 0.04, accs
    assert approx["history"][0]["train_loss"] < 2.0  # below the untrained ln(10) = 2.30


def test_cli_fp_train(tmp_path, capsys) -> None:
    out = tmp_path / "r.json"
    args = [
        "fp-train",
        "--multiplier",
        "fp_mit3",
        "--dataset",
        "digits",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--quiet",
        "--json",
        str(out),
    ]
    assert main(args) == 0
    assert "fp_mit3 (approximate backward) test accuracy" in capsys.readouterr().out
    assert out.read_text().count('"test_acc"') == 1
