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


MAX_QUOTE = 80  # characters of a file's content quoted in an error message


def clip(value: object, limit: int = MAX_QUOTE) -> str:
    """``repr(value)`` cut to ``limit`` characters (saying how long it was), for messages.

    A malformed file may hold one 100 MB line: quoting it whole would make the message as big.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, (str, bytes)) else len(text)
    return f"{text[:limit]}... ({size} characters)"
