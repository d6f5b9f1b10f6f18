"""``open_dataset``: the reader for a path, a folder of shards, a glob or a list of paths."""

from __future__ import annotations

from .base import FrameReader
from .formats import FORMATS
from .sources import ConcatReader, SourceSpec, expand_sources

__all__ = ["ACCEPTED_FORMATS", "detect_format", "open_dataset"]

#: one line per readable format (from :data:`~equitensor.datasets.formats.FORMATS`)
ACCEPTED_FORMATS = tuple(fmt.description for fmt in FORMATS if fmt.reader)


def detect_format(path: SourceSpec) -> str:
    """The format name (``s2ef``, ``pyg-lmdb``, ``aselmdb``, ``asedb``, ``traj``, ``extxyz``) of
    ``path``; for several sources the distinct names joined by ``+``. DatasetError if unreadable."""
    names = dict.fromkeys(fmt.name for _, fmt in expand_sources(path))
    return "+".join(names)


def pickle_permission(path: SourceSpec, allow_pickle: bool) -> dict:
    """Reader options carrying the user's permission to unpickle: ``{"allow_pickle": True}`` when it
    was given and every source of ``path`` is a legacy (pickled) LMDB, the only readers that take
    it; ``{}`` otherwise."""
    return {"allow_pickle": True} if allow_pickle and detect_format(path) == "pyg-lmdb" else {}


def open_dataset(path: SourceSpec, **opts) -> FrameReader:
    """Open any supported dataset as a lazy frame reader.

    ``path`` is a file or dataset folder, a folder of files (e.g. ``.aselmdb`` shards, ``.traj``
    or ``.extxyz`` files), a glob, or a list of any of these; several sources are read as one
    :class:`~equitensor.datasets.sources.ConcatReader` (one global frame index, errors naming the
    source file and its frame). ``opts`` go to every source's reader: ``require``,
    ``rebuild_tags`` (all); ``referenced`` (S2EF); ``allow_pickle`` (LMDB); ``energy_key``,
    ``forces_key``, ``stress_key``, ``split_isolated`` (extxyz). Options that do not apply to a
    source's format raise a TypeError.
    """
    readers = [fmt.reader_class()(source, **opts) for source, fmt in expand_sources(path)]
    return readers[0] if len(readers) == 1 else ConcatReader(readers)
