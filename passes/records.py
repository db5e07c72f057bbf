"""Per-layer records kept in the converted graph (``node.meta["appmult"]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

META_KEY = "appmult"


@dataclass
class LayerRecord:
    """What one multiply layer of a converted model does.

    ``multiplier`` is the multiplier object (``None`` = float layer); ``macs`` the number of
    multiplies for the example inputs given to ``convert`` (``None`` if none were given).
    ``nodes`` lists the graph nodes the layer became.
    """

    name: str
    op: str
    multiplier: Any = None
    bits: int | None = None
    signed: bool | None = None
    gradient: str | None = None
    per_channel: bool = False
    macs: int | None = None
    nodes: list[str] = field(default_factory=list)

    @property
    def multiplier_name(self) -> str | None:
        """The multiplier's name, or ``None`` for a float layer."""
        return None if self.multiplier is None else self.multiplier.name

    @property
    def approximate(self) -> bool:
        """Whether the layer's multiplies go through an approximate multiplier table."""
        return self.multiplier is not None

    def __str__(self) -> str:
        mult = self.multiplier_name or "float"
        bits = "-" if self.bits is None else f"{self.bits}{'s' if self.signed else 'u'}"
        macs = "?" if self.macs is None else f"{self.macs:,}"
        grad = self.gradient or "-"
        return f"{self.name:<32} {self.op:<10} {mult:<40} {bits:>4} {grad:<5} {macs:>14}"
