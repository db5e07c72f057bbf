"""ApproxTrain's MNIST example in appmult-fx: a LeNet-5-like network trained from scratch with an
FP approximate multiplier in every multiply of the forward and backward passes.

The network (ApproxTrain's ``lenet5`` example, Keras defaults: valid padding): conv 5x5 x 32,
ReLU, max-pool 2, conv 5x5 x 32, ReLU, max-pool 2, dense 1024, ReLU, dense 10; Adam, lr 1e-3
(constant), batch 64, no augmentation. ``train_fp`` converts it with ``convert(model,
Spec().set_global(multiplier), backward=...)`` before the first step (or keeps it FP32 with
``multiplier=None``) and trains with :func:`appmult_fx.app.train.fit`.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from appmult_fx import Spec, convert

from .data import dataset_info, load_dataset
from .train import TrainConfig, fit, seed_everything


class ApproxTrainLeNet(nn.Module):
    """Two 5x5 convs with 32 filters, dense 1024, dense ``num_classes`` (valid padding)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"ApproxTrainLeNet needs images of at least 16x16, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(32 * side * side, 1024), nn.ReLU(), nn.Linear(1024, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def train_fp(
    multiplier: str | None = "fp_mbm7",
    dataset: str = "mnist5k",
    *,
    backward: str = "approximate",
    epochs: int = 2,
    batch_size: int = 64,
    lr: float = 1e-3,
    lr_gamma: float = 1.0,
    seed: int = 0,
    device: str = "cpu",
    max_steps_per_epoch: int | None = None,
    data_root: str | None = None,
    image_size: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train :class:`ApproxTrainLeNet` from scratch; ``multiplier=None`` trains in FP32.

    Returns a report: the arguments, the per-epoch ``history`` and ``final_acc`` (test split:
    the held-out 1,000 images of ``mnist5k``, or the Fashion-MNIST test set). ``image_size``
    resizes the images (e.g. scikit-learn's 8x8 digits to 16x16 for quick tests). ``lr_gamma``
    other than 1 multiplies the learning rate by it at 1/3 and 2/3 of the epochs.
    """
    info = dataset_info(dataset, data_root, image_size)
    train_set = load_dataset(dataset, data_root, "train", image_size=image_size)
    test_set = load_dataset(dataset, data_root, "test", image_size=image_size)
    seed_everything(seed)
    model: nn.Module = ApproxTrainLeNet(info.channels, info.num_classes, info.image_size)
    if multiplier is not None:
        model = convert(model, Spec().set_global(multiplier), backward=backward)
    milestones = () if lr_gamma == 1.0 else (1 / 3, 2 / 3)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_gamma=lr_gamma,
        milestones=milestones,
        seed=seed,
        device=device,
        max_steps_per_epoch=max_steps_per_epoch,
        quiet=quiet,
    )
    start = time.perf_counter()
    history = fit(model, train_set, test_set, cfg)
    return {
        "model": "approxtrain_lenet",
        "multiplier": multiplier or "fp32",
        "backward": backward,
        "dataset": dataset,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "lr_gamma": lr_gamma,
        "seed": seed,
        "history": history,
        "final_acc": history[-1]["test_acc"] if history else None,
        "wall_time_s": time.perf_counter() - start,
    }
