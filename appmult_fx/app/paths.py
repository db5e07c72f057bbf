"""Output paths that would overwrite an input: refused before anything is written."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def same_path(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name the same file: the same resolved path (symbolic links and
    ``..`` followed), or, when both exist, the same file on disk (hard links too)."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.resolve() == pb.resolve():
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:
        return False


def refuse_overwriting_inputs(
    outputs: Iterable[tuple[str, str | Path | None]],
    inputs: Iterable[tuple[str, str | Path | None]],
) -> None:
    """``ValueError`` when an output path is the same file as an input, or as another output.

    ``outputs`` and ``inputs`` are ``(option, path)`` pairs (``None`` paths are skipped); the
    message names both options, e.g. ``--out f.pt is the same file as --checkpoint f.pt``."""
    outs = [(opt, p) for opt, p in outputs if p is not None]
    ins = [(opt, p) for opt, p in inputs if p is not None]
    for k, (opt, path) in enumerate(outs):
        for other_opt, other in ins:
            if same_path(path, other):
                raise ValueError(
                    f"{opt} {path} is the same file as {other_opt} {other}: writing it would "
                    "overwrite that input; choose another output path"
                )
        for other_opt, other in outs[:k]:
            if same_path(path, other):
                raise ValueError(
                    f"{opt} {path} is the same file as {other_opt} {other}: two outputs "
                    "cannot share one file; choose another path for one of them"
                )


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (resolved paths)."""
    p, f = Path(path).expanduser().resolve(), Path(folder).expanduser().resolve()
    return p == f or f in p.parents
