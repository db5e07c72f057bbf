"""The error raised for malformed LUT files, with the file (and line) in its message."""

from __future__ import annotations

from pathlib import Path


class LutFormatError(ValueError):
    """A LUT file is malformed; the message names the file and, for text files, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
