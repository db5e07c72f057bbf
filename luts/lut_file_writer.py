"""Writer of the project's own LUT file format (described in :mod:`.formats`).

Kept apart from :mod:`.multiplier` and :mod:`.formats` so that ``Multiplier.save`` can write
without importing the readers (which build ``Multiplier`` objects): the writer needs only the
multiplier's attributes, named by :class:`IntLut`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

OWN_FORMAT = "appmult-fx-lut"
OWN_VERSION = 1


class IntLut(Protocol):
    """The attributes of an int multiplier that its own-format file holds."""

    kind: str
    name: str
    bits_a: int
    bits_b: int
    signed: bool
    table: torch.Tensor
    grad_a: torch.Tensor | None
    grad_b: torch.Tensor | None
    provenance: dict[str, Any]
    hardware: dict[str, Any] | None

    @property
    def has_gradients(self) -> bool: ...

    @property
    def sha256(self) -> str: ...


def write_lut_file(mult: IntLut, path: str | Path) -> Path:
    """Write an int multiplier in the own format, atomically (temp file + ``os.replace``)."""
    path = Path(path)
    if mult.kind != "int":
        raise ValueError(f"{mult.name} is a {mult.kind} multiplier; these formats hold int LUTs")
    header = {
        "format": OWN_FORMAT,
        "version": OWN_VERSION,
        "kind": mult.kind,
        "name": mult.name,
        "bits": mult.bits_a,
        "bits_a": mult.bits_a,
        "bits_b": mult.bits_b,
        "signed": mult.signed,
        "has_gradients": mult.has_gradients,
        "window": mult.provenance.get("window"),
        "provenance": mult.provenance,
        "sha256": mult.sha256,
        "hardware": mult.hardware,
    }
    # provenance values JSON cannot hold (paths, tuples of objects) are stored as strings
    encoded = json.dumps(header, sort_keys=True, default=str).encode()
    arrays: dict[str, Any] = {
        "header": np.frombuffer(encoded, dtype=np.uint8),
        "table": mult.table.numpy().astype("<i4"),
    }
    if mult.grad_a is not None and mult.grad_b is not None:
        arrays["grad_a"] = mult.grad_a.numpy().astype("<f4")
        arrays["grad_b"] = mult.grad_b.numpy().astype("<f4")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # a file object: numpy would otherwise append ".npz"
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)  # atomic: readers never see a half-written file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
