"""The one exception type the data layer raises for bad input."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A dataset file or frame cannot be used as training data.

    Subclasses ``ValueError`` so callers that only know the builtin still catch it. The message
    always names the file, the frame index when there is one, what is wrong and what to do.
    An error raised where the file is not known (graph construction of a single ``Atoms``)
    carries ``path=None``; :meth:`located` re-raises it with the file and frame.
    """

    def __init__(self, path: str | Path | None, message: str, index: int | None = None, hint: str = ""):
        self.path = None if path is None else str(path)
        self.index = index
        self.message = message
        self.hint = hint
        parts = [self.path] if self.path is not None else []
        if index is not None:
            parts.append(f"frame {index}")
        text = f"{', '.join(parts)}: {message}" if parts else message
        if hint:
            text += f" ({hint})"
        super().__init__(text)

    def located(self, path: str | Path, index: int | None) -> DatasetError:
        """The same error naming ``path`` and frame ``index``."""
        return DatasetError(path, self.message, index, self.hint)
