"""The one exception type the data layer raises for bad input."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A dataset file or frame cannot be used as training data.

    Subclasses ``ValueError`` so callers that only know the builtin still catch it. The message
    always names the file, the frame index when there is one, what is wrong and what to do.
    """

    def __init__(self, path: str | Path | None, message: str, index: int | None = None, hint: str = ""):
        self.path = None if path is None else str(path)
        self.index = index
        where = self.path or "<input>"
        if index is not None:
            where += f", frame {index}"
        text = f"{where}: {message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)
