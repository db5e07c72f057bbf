"""Fixtures for the search tests: a briefly trained LeNet-5 on the default data (digits)."""

from __future__ import annotations

import pytest
import torch

import appmult_fx as amx

# Made-up power figures (mW) for built-in 8x8 unsigned multipliers.
POWERS = {"mul8u_exact": 0.40, "mul8u_trunc6": 0.30, "mul8u_trunc8": 0.22, "mul8u_drum3": 0.12}


@pytest.fixture(scope="package")
def digits() -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """The default data: (train, test)."""
    return amx.load_dataset("digits", split="train"), amx.load_dataset("digits", split="test")


@pytest.fixture(scope="package")
def lenet(digits) -> torch.nn.Module:
    """LeNet-5 trained for one quick epoch on digits (eval mode)."""
    torch.manual_seed(0)
    model = amx.build_model("lenet5", in_channels=1, num_classes=10, image_size=8)
    cfg = amx.TrainConfig(epochs=1, quiet=True, eval_batch_size=512)
    amx.fit(model, digits[0], digits[1], cfg)
    return model.eval()


@pytest.fixture(scope="package")
def candidates() -> list[amx.Multiplier]:
    """Built-in candidates carrying the made-up power figures."""
    return [amx.multiplier(n).with_hardware(power_mw=p) for n, p in POWERS.items()]


SEARCH_KW = {"val_fraction": 0.1, "calib_batches": 2, "batch_size": 64, "progress": False}


@pytest.fixture(scope="package")
def result(lenet, candidates, digits) -> amx.SearchResult:
    """A tiny in-memory search (12 trials) with test accuracies."""
    return amx.search(lenet, candidates, digits[0], test=digits[1], trials=12, **SEARCH_KW)
