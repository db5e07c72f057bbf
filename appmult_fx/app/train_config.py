"""The hyper-parameters of one training run (shared by the training loop and checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the seed's recipe)."""

    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    lr_gamma: float = 0.5
    milestones: tuple[float, ...] = (1 / 3, 2 / 3)
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 256
    max_steps_per_epoch: int | None = None
    quiet: bool = False
    checkpoint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def milestone_epochs(self) -> list[int]:
        """Epoch indices at which the learning rate is multiplied by ``lr_gamma``."""
        return sorted({round(f * self.epochs) for f in self.milestones} - {0} - {self.epochs})
