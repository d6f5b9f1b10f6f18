"""Extended XYZ: byte-offset index for random access, a generic reader and a writer.

Random access. A file is scanned once for the byte offset of every frame (one pass over its
newlines with numpy, no parsing of atom lines); the index is cached under
``cache_root()/index`` keyed by path, size and mtime, so later processes start instantly. A frame
is then read by seeking to its offset and parsing only its lines with ASE's extxyz parser.

Compressed ``.xz`` files: an xz stream cannot seek without decompressing everything before the
target, which makes random access quadratic. So on first access the file is decompressed once,
in full, into ``cache_root()/xz`` (keyed like the index, written atomically) and indexed there.
This costs disk (OC20 S2EF: ~5x the compressed size) but gives O(1) random access afterwards.
"""

from __future__ import annotations

import io
import lzma
import mmap
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io.extxyz import read_xyz

from .base import DEFAULT_REQUIRE, FrameReader
from .cache import atomic_write_bytes, cache_root, file_key
from .errors import DatasetError
from .frames import attach_labels, fixed_mask, frame_labels

__all__ = ["ExtXYZFile", "ExtXYZReader", "format_extxyz_frame", "index_extxyz", "write_extxyz"]

_ISOLATED = re.compile(rb"config_type\s*=\s*\"?isolated_?atoms?\b", re.IGNORECASE)


@dataclass(frozen=True)
class ExtXYZIndex:
    """Frame layout of one extxyz file: ``offsets`` [F+1] byte offsets, ``natoms`` [F], ``isolated`` [F]."""

    offsets: np.ndarray
    natoms: np.ndarray
    isolated: np.ndarray


def index_extxyz(path: str | Path) -> ExtXYZIndex:
    """Scan an uncompressed extxyz file for frame boundaries. Raises DatasetError on bad counts."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return ExtXYZIndex(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        data = np.frombuffer(buf, dtype=np.uint8)
        newlines = np.flatnonzero(data == ord("\n"))
        del data  # release the buffer export before the mmap closes
        starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
        if starts[-1] >= size:  # file ends with a newline: no line starts at EOF
            starts = starts[:-1]
        n_lines = len(starts)
        line_end = np.append(starts[1:], size)
        offsets, natoms, isolated = [], [], []
        line = 0
        while line < n_lines:
            raw = buf[starts[line] : line_end[line]]
            if not raw.strip():
                # Blank lines are allowed only as trailing padding at the end of the file.
                if all(not buf[starts[k] : line_end[k]].strip() for k in range(line, n_lines)):
                    break
                raise DatasetError(
                    path,
                    f"blank line {line + 1} where an atom count was expected",
                    len(offsets),
                    "remove the blank line",
                )
            try:
                count = int(raw.strip())
            except ValueError:
                raise DatasetError(
                    path,
                    f"line {line + 1} should hold the atom count of a frame but reads "
                    f"{raw.strip()[:60].decode(errors='replace')!r}",
                    len(offsets),
                    "the previous frame probably has a wrong atom count",
                ) from None
            if count < 0 or line + 2 + count > n_lines:
                raise DatasetError(
                    path,
                    f"frame declares {count} atoms at line {line + 1} but the file ends after "
                    f"{n_lines - line - 2} more atom lines",
                    len(offsets),
                    "the file is truncated or the count is wrong",
                )
            offsets.append(starts[line])
            natoms.append(count)
            comment = buf[starts[line + 1] : line_end[line + 1]]
            isolated.append(bool(_ISOLATED.search(comment)))
            line += count + 2
        offsets.append(size if line >= n_lines else starts[line])
    return ExtXYZIndex(
        np.asarray(offsets, np.int64), np.asarray(natoms, np.int64), np.asarray(isolated, bool)
    )


def _cached_index(path: Path) -> ExtXYZIndex:
    target = cache_root() / "index" / f"{file_key(path)}.npz"
    if target.exists():
        with np.load(target) as z:
            return ExtXYZIndex(z["offsets"], z["natoms"], z["isolated"])
    index = index_extxyz(path)
    atomic_write_bytes(
        target, lambda fh: np.savez(fh, offsets=index.offsets, natoms=index.natoms, isolated=index.isolated)
    )
    return index


def _decompressed(path: Path) -> Path:
    """Plain-text copy of an ``.xz`` file in the cache (created once, atomically)."""
    target = cache_root() / "xz" / f"{file_key(path)}-{path.name[:-3]}"
    if not target.exists():

        def copy(fh):
            try:
                with lzma.open(path, "rb") as src:
                    shutil.copyfileobj(src, fh, 1 << 20)
            except lzma.LZMAError as err:
                raise DatasetError(path, f"cannot decompress: {err}", hint="the .xz file is corrupt") from err

        atomic_write_bytes(target, copy)
    return target


class ExtXYZFile:
    """Random access to the raw frames (ASE-parsed ``Atoms``) of one extxyz file, ``.xz`` or plain.

    Indexing happens on first use. ``frame(k)`` parses frame ``k`` only.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(self.path, "file does not exist")
        self._index: ExtXYZIndex | None = None
        self._plain: Path | None = None

    @property
    def index(self) -> ExtXYZIndex:
        if self._index is None:
            self._plain = _decompressed(self.path) if self.path.suffix == ".xz" else self.path
            self._index = _cached_index(self._plain)
        return self._index

    def __len__(self) -> int:
        return len(self.index.natoms)

    def text(self, k: int) -> str:
        """The lines of frame ``k`` as text."""
        index = self.index
        start, stop = int(index.offsets[k]), int(index.offsets[k + 1])
        with open(self._plain, "rb") as fh:
            fh.seek(start)
            return fh.read(stop - start).decode("utf-8", errors="replace")

    def frame(self, k: int) -> Atoms:
        """Frame ``k`` exactly as ASE parses it. Raises DatasetError for malformed lines."""
        text = self.text(k)
        try:
            return next(read_xyz(io.StringIO(text), 0))
        except Exception as err:  # ASE raises XYZError, ValueError, IndexError, KeyError for bad lines
            raise DatasetError(
                self.path,
                f"malformed extxyz frame: {type(err).__name__}: {err}",
                k,
                "check this frame's comment line (Properties=, Lattice=) and that every atom line "
                "has one value per declared column",
            ) from err


def _take(atoms: Atoms, key: str, per_atom: bool):
    """Remove and return label ``key`` from wherever ASE put it (calc results, info or arrays)."""
    results = atoms.calc.results if atoms.calc is not None else {}
    store = atoms.arrays if per_atom else atoms.info
    if key in store:
        return store.pop(key)
    return results.get(key)


def extract_labels(atoms: Atoms, energy_key: str, forces_key: str, stress_key: str) -> Atoms:
    """Move the labels stored under the given keys into a clean SinglePointCalculator."""
    energy = _take(atoms, energy_key, per_atom=False)
    forces = _take(atoms, forces_key, per_atom=True)
    stress = _take(atoms, stress_key, per_atom=False)
    return attach_labels(atoms, energy=energy, forces=forces, stress=stress)


class ExtXYZReader(FrameReader):
    """Generic (extended) XYZ file, e.g. MACE/rMD17/3BPA style, plain or ``.xz``.

    Args:
        path: ``.xyz``/``.extxyz`` file, optionally ``.xz``-compressed.
        energy_key, forces_key, stress_key: where the labels are stored (e.g. MACE's
            ``REF_energy``/``REF_forces``/``REF_stress``). Found in the comment line, the atom
            columns, or ASE's calculator fields for the standard names.
        split_isolated: frames with ``config_type=IsolatedAtom`` (or ``isolated_atom``) are not
            training frames: they are removed from the sequence and their energies exposed as
            :attr:`isolated_atom_energies`.
        require, rebuild_tags: see :class:`FrameReader`.
    """

    def __init__(
        self,
        path: str | Path,
        energy_key: str = "energy",
        forces_key: str = "forces",
        stress_key: str = "stress",
        split_isolated: bool = True,
        require: Sequence[str] = DEFAULT_REQUIRE,
        rebuild_tags: bool = True,
    ):
        super().__init__(path, require, rebuild_tags)
        self.file = ExtXYZFile(path)
        self.keys = (energy_key, forces_key, stress_key)
        self.split_isolated = split_isolated
        self._frames: np.ndarray | None = None

    @property
    def frames(self) -> np.ndarray:
        """File frame numbers of the dataset frames, in order."""
        if self._frames is None:
            isolated = self.file.index.isolated if self.split_isolated else np.zeros(len(self.file), bool)
            self._frames = np.flatnonzero(~isolated)
        return self._frames

    def __len__(self) -> int:
        return len(self.frames)

    def _locate(self, index: int) -> tuple[Path, int]:
        return self.path, int(self.frames[index])

    def _read(self, index: int) -> Atoms:
        return self._labelled(int(self.frames[index]))

    def _labelled(self, k: int) -> Atoms:
        """File frame ``k`` with its labels moved into a calculator; DatasetError if they do not convert."""
        try:
            return extract_labels(self.file.frame(k), *self.keys)
        except (ValueError, TypeError) as err:  # e.g. energy=abc, or a forces column of 2 entries per atom
            if isinstance(err, DatasetError):
                raise
            raise DatasetError(
                self.path,
                f"labels cannot be read: {err}",
                k,
                f"the energy ({self.keys[0]!r}) must be a number, forces ({self.keys[1]!r}) 3 numbers "
                f"per atom, stress ({self.keys[2]!r}) 6 or 9 numbers",
            ) from err

    @property
    def isolated_atom_energies(self) -> dict[int, float]:
        """E0s: {atomic number: energy (eV)} from the ``IsolatedAtom`` frames (empty if none)."""
        out: dict[int, float] = {}
        for k in np.flatnonzero(self.file.index.isolated):
            atoms = self._labelled(int(k))
            labels = frame_labels(atoms)
            if len(atoms) != 1 or "energy" not in labels:
                raise DatasetError(
                    self.path,
                    "an IsolatedAtom frame must hold exactly one atom and an energy",
                    int(k),
                    f"check the {self.keys[0]!r} key of this frame",
                )
            out[int(atoms.numbers[0])] = float(labels["energy"])
        return out


def _fmt(x) -> str:
    # repr() of a Python float is the shortest string that round-trips exactly.
    return repr(float(x))


def format_extxyz_frame(atoms: Atoms, extra_info: dict | None = None) -> str:
    """One frame in the OC20 S2EF extxyz layout, full float precision.

    Columns ``species pos move_mask tags forces`` (forces only when labelled); comment keys
    ``Lattice``, ``energy`` and ``stress`` when labelled, ``pbc``, plus ``extra_info`` (ints,
    floats, strings without spaces). ``move_mask`` is True for free atoms (OC20 convention).
    """
    labels = frame_labels(atoms)
    n = len(atoms)
    props = "species:S:1:pos:R:3:move_mask:L:1:tags:I:1"
    if "forces" in labels:
        props += ":forces:R:3"
    parts = []
    if atoms.cell.rank > 0 or atoms.pbc.any():
        parts.append('Lattice="' + " ".join(_fmt(v) for v in atoms.cell.array.reshape(-1)) + '"')
    parts.append(f"Properties={props}")
    if "energy" in labels:
        parts.append(f"energy={_fmt(labels['energy'])}")
    if "stress" in labels:
        parts.append('stress="' + " ".join(_fmt(v) for v in labels["stress"].reshape(-1)) + '"')
    for key, value in (extra_info or {}).items():
        parts.append(f"{key}={value}")
    parts.append('pbc="' + " ".join("T" if p else "F" for p in atoms.pbc) + '"')
    lines = [str(n), " ".join(parts)]
    free = ~fixed_mask(atoms)
    tags = atoms.get_tags()
    symbols = atoms.get_chemical_symbols()
    forces = labels.get("forces")
    for a in range(n):
        cols = [
            symbols[a],
            *(_fmt(v) for v in atoms.positions[a]),
            "T" if free[a] else "F",
            str(int(tags[a])),
        ]
        if forces is not None:
            cols += [_fmt(v) for v in forces[a]]
        lines.append(" ".join(cols))
    return "\n".join(lines) + "\n"


def write_extxyz(path: str | Path, frames: Iterable[Atoms], info_keys: Sequence[str] = ("sid", "fid")) -> int:
    """Write frames to ``path`` (``.xz`` compresses) in the S2EF layout; returns the frame count.

    ``info_keys`` are copied from ``atoms.info`` into the comment line when present.
    """
    path = Path(path)
    opener = lzma.open if path.suffix == ".xz" else open
    count = 0
    with opener(path, "wt", encoding="utf-8") as fh:
        for atoms in frames:
            extra = {k: atoms.info[k] for k in info_keys if k in atoms.info}
            fh.write(format_extxyz_frame(atoms, extra))
            count += 1
    return count
