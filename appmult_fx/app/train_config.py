"""The hyper-parameters of one training run (shared by the training loop and checkpoints)."""

from __future__ import annotations

import math
import numbers
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

    def __post_init__(self) -> None:
        """Refuse hyper-parameters that would crash the run or make its figures meaningless
        (no epoch, no step, a learning rate of 0 after a milestone, ...): ValueError naming
        the option. Numbers may be numpy's; milestones lie in [0, 1] (0 and 1 are no-ops)."""
        counts = {"epochs": self.epochs, "batch_size": self.batch_size}
        counts["eval_batch_size"] = self.eval_batch_size
        if self.max_steps_per_epoch is not None:
            counts["max_steps_per_epoch"] = self.max_steps_per_epoch
        for name, value in counts.items():
            if not _is_integer(value) or value < 1:
                raise ValueError(f"training: {name} must be an integer >= 1, got {value!r}")
        for name, value in (("lr", self.lr), ("lr_gamma", self.lr_gamma)):
            if not (_is_real(value) and math.isfinite(value) and value > 0):
                raise ValueError(f"training: {name} must be a finite number > 0, got {value!r}")
        if not (_is_real(self.weight_decay) and math.isfinite(self.weight_decay)):
            raise ValueError(
                f"training: weight_decay must be a number >= 0, got {self.weight_decay!r}"
            )
        if self.weight_decay < 0:
            raise ValueError(
                f"training: weight_decay must be a number >= 0, got {self.weight_decay!r}"
            )
        bad = [f for f in self.milestones if not (_is_real(f) and 0 <= f <= 1)]
        if bad:
            raise ValueError(
                f"training: milestones are fractions of the epochs, each in [0, 1]; got {bad}"
            )

    def milestone_epochs(self) -> list[int]:
        """Epoch indices at which the learning rate is multiplied by ``lr_gamma``."""
        return sorted({round(f * self.epochs) for f in self.milestones} - {0} - {self.epochs})


def _is_integer(value: Any) -> bool:
    """An integer (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A real number (numpy's too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
