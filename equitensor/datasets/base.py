"""The reader interface: a lazy, random-access sequence of labelled ``ase.Atoms`` frames."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from pathlib import Path

from ase import Atoms

from .frames import validate_frame
from .tags import ensure_tags

__all__ = ["DEFAULT_REQUIRE", "FrameReader"]

DEFAULT_REQUIRE = ("energy", "forces")


class FrameReader(abc.ABC):
    """Random access to the frames of one dataset; nothing is loaded until it is indexed.

    Args:
        path: the file or folder read.
        require: labels every frame must carry (subset of ``energy``, ``forces``, ``stress``);
            a frame without one raises :class:`~equitensor.datasets.errors.DatasetError`.
            Pass ``()`` to read unlabelled structures.
        rebuild_tags: rebuild OC20 tags for constrained slabs that store none (see ``tags``).

    Subclasses implement ``__len__`` and ``_read(index)``. Open file handles are dropped on
    pickling and reopened lazily, so readers can be sent to DataLoader worker processes.
    """

    def __init__(self, path: str | Path, require: Sequence[str] = DEFAULT_REQUIRE, rebuild_tags: bool = True):
        self.path = Path(path)
        self.require = tuple(require)
        self.rebuild_tags = rebuild_tags

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def _read(self, index: int) -> Atoms:
        """Frame ``index`` (0 <= index < len) with labels attached, before validation."""

    def __getitem__(self, index: int) -> Atoms:
        n = len(self)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"frame index {index} out of range for {self.path} with {n} frames")
        atoms = self._read(index)
        ensure_tags(atoms, self.rebuild_tags)
        source, local = self._locate(index)
        return validate_frame(atoms, source, local, self.require)

    def _locate(self, index: int) -> tuple[Path, int]:
        """(file, frame index in that file) of dataset frame ``index``, for error messages."""
        return self.path, index

    def num_atoms(self, index: int) -> int:
        """Atom count of frame ``index`` (for size-aware batching; no validation, no graph)."""
        return len(self._read(int(index)))

    def release(self) -> None:
        """Close open file handles; the reader reopens them on the next access.

        Readers that keep no handle between reads (extxyz, S2EF, legacy LMDB) have nothing to do.
        """
        return None

    def __iter__(self) -> Iterator[Atoms]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        try:
            frames = len(self)
        except Exception:  # noqa: BLE001 - a half-constructed reader (e.g. shown in a traceback)
            frames = "?"
        return f"{type(self).__name__}({str(self.path)!r}, frames={frames})"
