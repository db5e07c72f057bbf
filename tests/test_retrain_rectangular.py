"""Retraining with a rectangular multiplier (8-bit activations x 4-bit weights) recovers the
accuracy that conversion lost, with LUT and with straight-through gradients, and the retrained
model exports to ONNX that computes the same outputs in onnxruntime."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import appmult_fx as amx
from appmult_fx.app.data import load_dataset
from appmult_fx.app.models import build_model
from appmult_fx.app.train import TrainConfig, evaluate, fit

FLOAT_CFG = TrainConfig(epochs=12, lr=3e-3, quiet=True)
RETRAIN_CFG = replace(FLOAT_CFG, epochs=2, lr=1e-3)


@pytest.fixture(scope="module")
def digits():
    """The default data (scikit-learn digits, installed with the package): train, test."""
    return load_dataset("digits", split="train", augment=True), load_dataset("digits", "test")


@pytest.fixture(scope="module")
def float_lenet(digits) -> tuple[torch.nn.Module, float]:
    """A float LeNet-5 trained on digits, and its test accuracy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model("lenet5", 1, 10, 8)
        fit(model, *digits, FLOAT_CFG)
        return model, evaluate(model, digits[1])["acc"]
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def evoapprox_8x4() -> amx.Multiplier:
    """EvoApproxLib's mul8x4u_2AN (8-bit A x 4-bit B, unsigned) from its C model, with
    difference-method gradient LUTs."""
    path = Path(__file__).resolve().parents[1].parent / "shared/evoapprox/8x4_unsigned"
    if not path.is_dir():
        pytest.skip("../shared/evoapprox is absent (fresh clone)")
    mult = amx.from_c_source(path / "mul8x4u_2AN.c", (8, 4), False)
    return amx.with_gradients(mult)


def _retrain(model, mult, gradient: str, digits) -> tuple[torch.fx.GraphModule, float, float]:
    train, test = digits
    torch.manual_seed(1)
    gm = amx.convert(model, amx.Spec().set_global(mult), gradient=gradient)
    assert {(r.bits_a, r.bits_b, r.widths) for r in amx.layers(gm)} == {(8, 4, "8x4")}
    amx.calibrate(gm, (train[i][0].unsqueeze(0) for i in range(64)), progress=False)
    initial = evaluate(gm, test)["acc"]
    fit(gm, train, test, RETRAIN_CFG)
    return gm, initial, evaluate(gm, test)["acc"]


@pytest.mark.parametrize("gradient", ["lut", "ste"])
def test_retraining_with_evoapprox_8x4_recovers_accuracy(
    float_lenet, evoapprox_8x4, digits, gradient: str, one_thread, tmp_path: Path
) -> None:
    model, float_acc = float_lenet
    assert float_acc > 0.85, float_acc
    gm, initial, final = _retrain(model, evoapprox_8x4, gradient, digits)
    # 4-bit weights through mul8x4u_2AN cost accuracy, retraining wins it back
    assert initial < float_acc - 0.02, (float_acc, initial)
    assert final > initial + 0.02 and final > float_acc - 0.02, (float_acc, initial, final)
    if gradient == "lut":
        _check_export(gm.eval(), digits[1], final, tmp_path)


def _check_export(gm: torch.fx.GraphModule, test, accuracy: float, tmp_path: Path) -> None:
    """The exported model (custom nodes through the loader, and the portable file in stock
    onnxruntime) gives PyTorch's outputs on the test set, hence its accuracy."""
    x = torch.stack([test[i][0] for i in range(len(test))])
    labels = torch.tensor([test[i][1] for i in range(len(test))])
    path = amx.export(gm, x[:4], tmp_path / "export", portable=True, progress=False)
    with torch.no_grad():
        expected = gm(x)
    custom = amx.load_exported(path)(x)
    session = ort.InferenceSession(
        str(path / "model_portable.onnx"), providers=["CPUExecutionProvider"]
    )
    (portable,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    scale = float(expected.abs().max())
    for out in (custom.numpy(), portable):
        np.testing.assert_allclose(out, expected.numpy(), rtol=0, atol=1e-5 * scale)
        assert (torch.from_numpy(out).argmax(1) == labels).float().mean().item() == pytest.approx(
            accuracy
        )
