"""Many files as one dataset: folders of shards, lists of paths and globs behind one global index.

fairchem distributes OC20, OC22, OMat24 and OMol25 as folders of ``.aselmdb`` shards. A source
specification (a path, a glob, or a list of them) expands to an ordered list of files or
dataset folders (:func:`expand_sources`); :class:`ConcatReader` reads them as one sequence of
frames, frame ``i`` being frame ``i - offset[k]`` of source ``k``.
"""

from __future__ import annotations

import glob
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from .base import FrameReader
from .errors import DatasetError
from .formats import FORMATS, DatasetFormat, format_for_file, format_for_folder
from .frames import frame_labels

__all__ = ["ConcatReader", "SourceSpec", "expand_sources", "frame_reader", "has_matches", "locate_frame"]

SourceSpec = str | Path | Sequence[str | Path]

_GLOB_CHARS = "*?["


def _accepted() -> str:
    return "accepted: " + "; ".join(f.description for f in FORMATS if f.reader)


def _expand_folder(folder: Path) -> list[tuple[Path, DatasetFormat]]:
    """A folder stored in one format (S2EF, LMDB), else the readable files directly inside it."""
    fmt = format_for_folder(folder)
    if fmt is not None:
        return [(folder, fmt)]
    files = [(p, format_for_file(p)) for p in sorted(folder.iterdir()) if p.is_file()]
    files = [(p, fmt) for p, fmt in files if fmt is not None]
    if not files:
        raise DatasetError(folder, "folder holds no dataset files", hint=_accepted())
    return files


def _expand_one(item: str | Path) -> list[tuple[Path, DatasetFormat]]:
    text = str(Path(item).expanduser()) if not isinstance(item, Path) else str(item)
    if any(c in text for c in _GLOB_CHARS) and not Path(text).exists():
        matches = sorted(glob.glob(text))
        if not matches:
            raise DatasetError(text, "the glob matches no file", hint="check the pattern and the folder")
        return [source for match in matches for source in _expand_one(Path(match))]
    path = Path(text)
    if path.is_dir():
        return _expand_folder(path)
    if not path.exists():
        raise DatasetError(path, "does not exist")
    fmt = format_for_file(path)
    if fmt is None:
        raise DatasetError(path, "unrecognised dataset format", hint=_accepted())
    return [(path, fmt)]


def expand_sources(spec: SourceSpec) -> list[tuple[Path, DatasetFormat]]:
    """The files or dataset folders named by ``spec``, in order, each with its format.

    ``spec`` is a path, a glob (``shards/*.aselmdb``, sorted), or a list of either. A folder in a
    folder format (OC20 S2EF, LMDB) is one source; any other folder stands for the readable files
    directly inside it (sorted by name; other files are ignored).

    Raises:
        DatasetError: a path that does not exist, a glob that matches nothing, a folder with no
            dataset files, an unrecognised suffix, or an empty list.
    """
    items = [spec] if isinstance(spec, str | Path) else list(spec)
    if not items:
        raise DatasetError(None, "no dataset path given", hint="pass a path, a glob or a list of paths")
    sources = [source for item in items for source in _expand_one(item)]
    seen: set[Path] = set()
    for path, _ in sources:
        if path.resolve() in seen:
            raise DatasetError(path, "named twice", hint="each file may appear once in a dataset")
        seen.add(path.resolve())
    return sources


def has_matches(spec: SourceSpec) -> bool:
    """Whether every item of ``spec`` is an existing path or a glob matching at least one."""
    items = [spec] if isinstance(spec, str | Path) else list(spec)
    return bool(items) and all(
        Path(str(i)).expanduser().exists() or glob.glob(str(Path(str(i)).expanduser())) for i in items
    )


def _unwrap(dataset, index: int = 0) -> tuple[object, int]:
    """The frame reader under ``dataset`` (or the innermost dataset) and ``index`` mapped onto it.

    Maps the index through ``Subset`` layers and follows ``.dataset`` (graph caches) and
    ``.reader`` (``GraphDataset``).
    """
    from torch.utils.data import Subset

    while not isinstance(dataset, FrameReader):
        if isinstance(dataset, Subset):
            index, dataset = int(dataset.indices[index]), dataset.dataset
            continue
        inner = getattr(dataset, "reader", None) or getattr(dataset, "dataset", None)
        if inner is None:
            break
        dataset = inner
    return dataset, index


def frame_reader(dataset) -> FrameReader | None:
    """The frame reader a graph dataset (``GraphDataset``, graph cache, ``Subset``) is built on."""
    reader, _ = _unwrap(dataset)
    return reader if isinstance(reader, FrameReader) else None


def locate_frame(dataset, index: int) -> tuple[Path, int] | None:
    """(source file, frame in it) of item ``index`` of a dataset built on a frame reader, else ``None``."""
    reader, index = _unwrap(dataset, index)
    return reader._locate(index) if isinstance(reader, FrameReader) else None


def _label_keys(atoms: Atoms) -> tuple[str, ...]:
    return tuple(sorted(frame_labels(atoms)))


class ConcatReader(FrameReader):
    """Several readers as one: one global frame index over all sources, in order.

    Each source is opened once when the reader is built (for its length and to check that its
    first frame carries the same labels as the first source's), then released; it is reopened
    on access, with at most ``max_open`` sources held open at once, and in each process anew
    (the readers reopen after a ``fork``), so DataLoader workers are safe. Errors name the source
    file and the frame index within it.

    Args:
        readers: the source readers (e.g. from :func:`~equitensor.datasets.open_dataset`).
        max_open: how many sources may hold file handles at once.

    Raises:
        DatasetError: sources whose frames carry different labels (``energy``/``forces``/``stress``).
    """

    def __init__(self, readers: Sequence[FrameReader], max_open: int = 64):
        if not readers:
            raise DatasetError(None, "no sources to concatenate")
        first = readers[0]
        super().__init__(first.path, first.require, first.rebuild_tags)
        self.readers = list(readers)
        self.max_open = max_open
        self._ends = np.cumsum([len(r) for r in self.readers])
        self._open: OrderedDict[int, None] = OrderedDict()
        self._check_label_keys()
        for reader in self.readers:
            reader.release()

    def _check_label_keys(self) -> None:
        reference = None
        for reader in self.readers:
            if len(reader) == 0:
                continue
            keys = _label_keys(reader[0])
            if reference is None:
                reference = (reader.path, keys)
            elif keys != reference[1]:
                raise DatasetError(
                    reader.path,
                    f"frame 0 has labels {list(keys)} but {reference[0]} has {list(reference[1])}",
                    hint="every source of one dataset must carry the same labels; split them into "
                    "separate datasets or relabel",
                )

    @property
    def paths(self) -> list[Path]:
        return [r.path for r in self.readers]

    @property
    def isolated_atom_energies(self) -> dict[int, float]:
        """Isolated-atom energies found in any source (extxyz ``config_type=IsolatedAtom``)."""
        energies: dict[int, float] = {}
        for reader in self.readers:
            energies.update(getattr(reader, "isolated_atom_energies", None) or {})
        return energies

    def __len__(self) -> int:
        return int(self._ends[-1])

    def _locate_source(self, index: int) -> tuple[int, int]:
        k = int(np.searchsorted(self._ends, index, side="right"))
        return k, index - (int(self._ends[k - 1]) if k else 0)

    def _locate(self, index: int) -> tuple[Path, int]:
        k, local = self._locate_source(index)
        return self.readers[k]._locate(local)

    def _read(self, index: int) -> Atoms:
        k, local = self._locate_source(index)
        self._mark_open(k)
        return self.readers[k]._read(local)

    def _mark_open(self, k: int) -> None:
        self._open[k] = None
        self._open.move_to_end(k)
        while len(self._open) > self.max_open:
            oldest, _ = self._open.popitem(last=False)
            self.readers[oldest].release()

    def release(self) -> None:
        for reader in self.readers:
            reader.release()
        self._open.clear()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return f"ConcatReader({len(self.readers)} sources from {str(self.path)!r}, frames={len(self)})"
