"""Per-layer sensitivity: each candidate in each layer alone, the other layers exact.

``L x C`` evaluations on one calibrated model: for every batch the exact-quantized values of
all nodes are computed once, then each (layer, candidate) pair re-runs only the nodes
downstream of that layer (:meth:`Engine.run_from`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .engine import Batches, Engine

METRICS = ("accuracy", "kl")


@dataclass(frozen=True)
class Sensitivity:
    """``values[l][c]``: validation accuracy (0..1, metric ``accuracy``) or mean KL divergence
    of the logits from the exact-quantized model's (nats per sample, metric ``kl``) with only
    layer ``l`` on candidate ``c``; ``reference`` is the exact-quantized accuracy (or 0)."""

    metric: str
    layers: list[str]
    candidates: list[str]
    values: list[list[float]]
    reference: float

    def loss(self, layer: str, candidate: str) -> float:
        """Accuracy drop (0..1) or KL of one pair: larger means more harmful."""
        v = self.values[self.layers.index(layer)][self.candidates.index(candidate)]
        return self.reference - v if self.metric == "accuracy" else v

    def markdown(self) -> str:
        """The table: one row per layer, one column per candidate."""
        unit = "accuracy drop (points)" if self.metric == "accuracy" else "KL (nats/sample)"
        scale = 100.0 if self.metric == "accuracy" else 1.0
        head = f"| layer \\ {unit} | " + " | ".join(f"`{c}`" for c in self.candidates) + " |"
        rule = "|---|" + "---:|" * len(self.candidates)
        rows = [
            f"| `{layer}` | "
            + " | ".join(f"{scale * self.loss(layer, c):.3g}" for c in self.candidates)
            + " |"
            for layer in self.layers
        ]
        return "\n".join([head, rule, *rows]) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "metric": self.metric,
            "layers": self.layers,
            "candidates": self.candidates,
            "values": self.values,
            "reference": self.reference,
        }


def measure(
    engine: Engine,
    tables: Mapping[str, torch.Tensor],
    batches: Batches,
    *,
    metric: str = "accuracy",
    layers: Sequence[str] | None = None,
    progress: bool = True,
) -> Sensitivity:
    """Sensitivity of every layer to every candidate (``tables``: name -> product table)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    names = list(layers or engine.layer_names)
    cands = list(tables)
    sums = torch.zeros(len(names), len(cands), dtype=torch.float64)
    ref_correct = total = 0
    below = {layer: engine.downstream(layer) for layer in names}
    out_node = next(n for n in engine.gm.graph.nodes if n.op == "output")
    bar = tqdm(
        total=len(names) * len(cands) * len(batches),
        desc="sensitivity",
        disable=not progress,
        leave=False,
    )
    for x, y in batches:
        cached = engine.trace_values(x)
        exact = cached[out_node]
        ref_correct += int((exact.argmax(1) == y).sum())
        total += int(y.numel())
        for i, layer in enumerate(names):
            for j, cand in enumerate(cands):
                logits = engine.run_from(cached, layer, tables[cand], below[layer])
                if metric == "accuracy":
                    sums[i, j] += int((logits.argmax(1) == y).sum())
                else:
                    sums[i, j] += F.kl_div(
                        F.log_softmax(logits.double(), 1),
                        F.log_softmax(exact.double(), 1),
                        log_target=True,
                        reduction="sum",
                    ).item()
                bar.update()
    bar.close()
    torch._check(total > 0, lambda: "expected at least one labelled batch, got none")
    return Sensitivity(
        metric,
        names,
        cands,
        (sums / total).tolist(),
        ref_correct / total if metric == "accuracy" else 0.0,
    )
