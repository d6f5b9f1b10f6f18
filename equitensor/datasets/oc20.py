"""OC20 S2EF raw layout: folders of ``N.extxyz[.xz]`` + ``N.txt[.xz]`` file pairs.

Each ``N.txt`` line describes the frame at the same position of ``N.extxyz``:
``random<sid>,frame<fid>,<reference_energy>``. The extxyz comment line holds the total DFT energy
(``energy``), the atom columns ``species pos move_mask tags forces``. The OC20 training target is
the *referenced* energy ``energy - reference_energy`` (reader option ``referenced=True``).

Lengths come from the (small) txt files, read when the reader is built; each extxyz file is
indexed lazily on its first access (see :mod:`equitensor.datasets.extxyz` for ``.xz`` handling).
"""

from __future__ import annotations

import lzma
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from .base import DEFAULT_REQUIRE, FrameReader
from .errors import DatasetError
from .extxyz import ExtXYZFile, extract_labels, format_extxyz_frame
from .frames import attach_labels, frame_labels

__all__ = ["S2EFReader", "find_s2ef_pairs", "write_s2ef"]

_LINE = re.compile(r"^\s*(?:random)?(-?\d+)\s*,\s*(?:frame)?(-?\d+)\s*,\s*(\S+)\s*$")
_NUMBERED = re.compile(r"^(\d+)\.extxyz(\.xz)?$")


def find_s2ef_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """The ``(N.extxyz[.xz], N.txt[.xz])`` pairs of a folder, sorted by N. Empty if none."""
    folder = Path(folder)
    pairs = []
    for xyz in folder.iterdir():
        match = _NUMBERED.match(xyz.name)
        if not match:
            continue
        stem = match.group(1)
        txt = next(
            (folder / f"{stem}{s}" for s in (".txt", ".txt.xz") if (folder / f"{stem}{s}").exists()), None
        )
        if txt is None:
            raise DatasetError(
                xyz,
                f"no {stem}.txt or {stem}.txt.xz next to it",
                hint="an OC20 S2EF folder needs one txt file per extxyz file",
            )
        pairs.append((int(stem), xyz, txt))
    return [(xyz, txt) for _, xyz, txt in sorted(pairs)]


def _read_txt(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sid [F] int64, fid [F] int64, reference energy [F] float64) from an S2EF txt file."""
    opener = lzma.open if path.suffix == ".xz" else open
    sids, fids, refs = [], [], []
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh):
                if not line.strip():
                    continue
                match = _LINE.match(line)
                if match is None:
                    raise DatasetError(
                        path,
                        f"line {lineno + 1} is not 'random<sid>,frame<fid>,<energy>': {line.strip()[:80]!r}",
                        len(sids),
                    )
                sids.append(int(match.group(1)))
                fids.append(int(match.group(2)))
                try:
                    refs.append(float(match.group(3)))
                except ValueError:
                    raise DatasetError(
                        path,
                        f"line {lineno + 1}: reference energy {match.group(3)!r} is not a number",
                        len(sids) - 1,
                    ) from None
    except (OSError, lzma.LZMAError, UnicodeDecodeError) as err:
        raise DatasetError(path, f"cannot read: {err}") from err
    return np.asarray(sids, np.int64), np.asarray(fids, np.int64), np.asarray(refs, np.float64)


class S2EFReader(FrameReader):
    """OC20 S2EF raw folder reader.

    Args:
        path: folder holding ``0.extxyz[.xz]`` + ``0.txt[.xz]``, ``1.extxyz`` + ``1.txt``, ...
        referenced: if True the energy label is ``energy - reference_energy`` (the OC20 S2EF
            target); ``atoms.info["energy_referenced"]`` records it. The total energy is
            always recoverable as ``energy + info["reference_energy"]``.
        require, rebuild_tags: see :class:`FrameReader`.

    Frames carry ``info["sid"]``, ``info["fid"]``, ``info["reference_energy"]``.
    """

    def __init__(
        self,
        path: str | Path,
        referenced: bool = False,
        require: Sequence[str] = DEFAULT_REQUIRE,
        rebuild_tags: bool = True,
    ):
        super().__init__(path, require, rebuild_tags)
        if not self.path.is_dir():
            raise DatasetError(self.path, "an S2EF dataset is a folder of N.extxyz[.xz] + N.txt[.xz] pairs")
        pairs = find_s2ef_pairs(self.path)
        if not pairs:
            raise DatasetError(self.path, "no N.extxyz or N.extxyz.xz files in this folder")
        self.referenced = referenced
        self.files = [ExtXYZFile(xyz) for xyz, _ in pairs]
        self.txt_paths = [txt for _, txt in pairs]
        meta = [_read_txt(txt) for txt in self.txt_paths]
        self.sid = np.concatenate([m[0] for m in meta])
        self.fid = np.concatenate([m[1] for m in meta])
        self.reference_energy = np.concatenate([m[2] for m in meta])
        self._ends = np.cumsum([len(m[0]) for m in meta])
        self._checked = [False] * len(self.files)

    def __len__(self) -> int:
        return int(self._ends[-1])

    def _locate(self, index: int) -> tuple[Path, int]:
        k = int(np.searchsorted(self._ends, index, side="right"))
        start = int(self._ends[k - 1]) if k else 0
        return self.files[k].path, index - start

    def _read(self, index: int) -> Atoms:
        k = int(np.searchsorted(self._ends, index, side="right"))
        local = index - (int(self._ends[k - 1]) if k else 0)
        file = self.files[k]
        if not self._checked[k]:
            expected = int(self._ends[k]) - (int(self._ends[k - 1]) if k else 0)
            if len(file) != expected:
                raise DatasetError(
                    file.path,
                    f"holds {len(file)} frames but {self.txt_paths[k].name} describes {expected}",
                    hint="the file pair is out of sync",
                )
            self._checked[k] = True
        atoms = extract_labels(file.frame(local), "energy", "forces", "stress")
        ref = float(self.reference_energy[index])
        atoms.info.update(sid=int(self.sid[index]), fid=int(self.fid[index]), reference_energy=ref)
        if self.referenced:
            labels = frame_labels(atoms)
            if "energy" in labels:
                attach_labels(atoms, labels["energy"] - ref, labels.get("forces"), labels.get("stress"))
            atoms.info["energy_referenced"] = True
        return atoms


def write_s2ef(
    frames: Iterable[Atoms], out_dir: str | Path, frames_per_file: int = 5000, compress: bool = False
) -> int:
    """Write frames as an OC20 S2EF folder (``0.extxyz`` + ``0.txt``, ...); returns the frame count.

    The extxyz energy is the total energy (a referenced label is converted back using
    ``info["reference_energy"]``); txt lines carry ``info["sid"]`` (default: running frame
    number), ``info["fid"]`` (default 0) and ``info["reference_energy"]`` (default 0.0).
    ``compress=True`` writes ``.extxyz.xz`` + ``.txt.xz`` as the OC20 downloads do.
    Output bytes depend only on the frames (xz headers hold no timestamp).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".xz" if compress else ""

    def opener(path: Path):
        return lzma.open(path, "wt", encoding="utf-8") if compress else open(path, "w", encoding="utf-8")

    count, file_no = 0, 0
    xyz_fh = txt_fh = None
    try:
        for atoms in frames:
            if count % frames_per_file == 0:
                for fh in (xyz_fh, txt_fh):
                    if fh is not None:
                        fh.close()
                xyz_fh = opener(out_dir / f"{file_no}.extxyz{suffix}")
                txt_fh = opener(out_dir / f"{file_no}.txt{suffix}")
                file_no += 1
            ref = float(atoms.info.get("reference_energy", 0.0))
            sid = int(atoms.info.get("sid", count))
            fid = int(atoms.info.get("fid", 0))
            labels = frame_labels(atoms)
            if atoms.info.get("energy_referenced") and "energy" in labels:
                atoms = atoms.copy()
                attach_labels(atoms, labels["energy"] + ref, labels.get("forces"), labels.get("stress"))
            xyz_fh.write(format_extxyz_frame(atoms))
            txt_fh.write(f"random{sid},frame{fid},{ref!r}\n")
            count += 1
        if count == 0:  # an empty dataset is still a valid (empty) S2EF folder
            xyz_fh = opener(out_dir / f"0.extxyz{suffix}")
            txt_fh = opener(out_dir / f"0.txt{suffix}")
    finally:
        for fh in (xyz_fh, txt_fh):
            if fh is not None:
                fh.close()
    return count
