"""The one table of dataset formats: how each is recognised, read and written.

``open_dataset`` (reading), ``convert`` (writing) and the ``equitensor data`` help all read
:data:`FORMATS`; a new format is one new :class:`DatasetFormat` entry here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from .errors import DatasetError

__all__ = ["FORMATS", "DatasetFormat", "format_by_name", "format_for_file", "format_for_folder"]


def _s2ef_folder(path: Path) -> bool:
    from .oc20 import find_s2ef_pairs

    return bool(find_s2ef_pairs(path))


def _lmdb_folder(path: Path) -> bool:
    return (path / "data.mdb").exists() or any(path.glob("*.lmdb"))


@dataclass(frozen=True)
class DatasetFormat:
    """One dataset format.

    Attributes:
        name: what ``--format`` and ``detect_format`` call it.
        description: one line for help texts and error messages.
        suffixes: lower-case file name endings that select this format (longest match wins).
        folder: predicate ``folder -> bool`` for formats stored as a folder (checked in table order).
        reader: ``"module:Class"`` of the reader, relative to ``equitensor.datasets``; ``None`` for
            write-only variants.
        writer: ``"module:function"`` writing ``(dst, frames, **writer_options) -> count``;
            ``None`` when the format cannot be written.
        writer_options: fixed keyword arguments of ``writer`` for this entry.
        frames_per_file: whether the writer takes ``frames_per_file``.
    """

    name: str
    description: str
    suffixes: tuple[str, ...] = ()
    folder: Callable[[Path], bool] | None = None
    reader: str | None = None
    writer: str | None = None
    writer_options: dict = field(default_factory=dict)
    frames_per_file: bool = False

    def reader_class(self) -> type:
        """The reader class (imported on first use: some need optional packages)."""
        return _load(self.reader)

    def write(self, dst: Path, frames: Iterable[Atoms], frames_per_file: int) -> int:
        """Write ``frames`` to ``dst``; returns the number of frames written."""
        if self.writer is None:
            raise DatasetError(dst, f"{self.name} files cannot be written", hint="choose another --format")
        options = dict(self.writer_options)
        if self.frames_per_file:
            options["frames_per_file"] = frames_per_file
        return _load(self.writer)(dst, frames, **options)


def write_s2ef_folder(dst: Path, frames: Iterable[Atoms], **options) -> int:
    """:func:`~equitensor.datasets.oc20.write_s2ef` with the ``(dst, frames)`` order of the other writers."""
    from .oc20 import write_s2ef

    return write_s2ef(frames, dst, **options)


def _load(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(f"equitensor.datasets.{module}"), name)


FORMATS: tuple[DatasetFormat, ...] = (
    DatasetFormat(
        "s2ef",
        "folder of N.extxyz[.xz] + N.txt[.xz] (OC20 S2EF raw)",
        folder=_s2ef_folder,
        reader="oc20:S2EFReader",
        writer="formats:write_s2ef_folder",
        frames_per_file=True,
    ),
    DatasetFormat(
        "s2ef-xz",
        "the S2EF folder layout, xz-compressed as the OC20 downloads (read as s2ef)",
        writer="formats:write_s2ef_folder",
        writer_options={"compress": True},
        frames_per_file=True,
    ),
    DatasetFormat(
        "pyg-lmdb",
        ".lmdb file, LMDB folder or folder of .lmdb files (legacy OC20/OC22 pickled PyG Data, "
        "needs allow_pickle=True)",
        suffixes=(".lmdb",),
        folder=_lmdb_folder,
        reader="lmdb:PyGLmdbReader",
        writer="lmdb:write_pyg_lmdb",
    ),
    DatasetFormat(
        "aselmdb",
        ".aselmdb (fairchem ASE-LMDB)",
        suffixes=(".aselmdb",),
        reader="asedb:AseDBReader",
        writer="asedb:write_ase_db",
    ),
    DatasetFormat(
        "asedb",
        ".db or .json (ASE database)",
        suffixes=(".db", ".json"),
        reader="asedb:AseDBReader",
        writer="asedb:write_ase_db",
    ),
    DatasetFormat("traj", ".traj (ASE trajectory)", suffixes=(".traj",), reader="asedb:TrajectoryReader"),
    DatasetFormat(
        "extxyz",
        ".xyz / .extxyz, optionally .xz (extended XYZ)",
        suffixes=(".xyz", ".extxyz", ".xyz.xz", ".extxyz.xz"),
        reader="extxyz:ExtXYZReader",
        writer="extxyz:write_extxyz",
    ),
)


def format_by_name(name: str) -> DatasetFormat:
    """The entry called ``name``; ValueError listing the names otherwise."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise ValueError(f"unknown dataset format {name!r}; choose one of {', '.join(f.name for f in FORMATS)}")


def format_for_file(path: str | Path) -> DatasetFormat | None:
    """The readable format a file name selects by its suffix (longest match), or ``None``."""
    name = Path(path).name.lower()
    matches = [(len(s), fmt) for fmt in FORMATS if fmt.reader for s in fmt.suffixes if name.endswith(s)]
    return max(matches, key=lambda m: m[0])[1] if matches else None


def format_for_folder(path: str | Path) -> DatasetFormat | None:
    """The format stored as this folder (S2EF, LMDB), or ``None``."""
    for fmt in FORMATS:
        if fmt.folder is not None and fmt.reader and fmt.folder(Path(path)):
            return fmt
    return None
