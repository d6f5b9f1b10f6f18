"""Convert any readable dataset into S2EF extxyz+txt, extxyz, ASE-LMDB / ASE db or legacy PyG LMDB."""

from __future__ import annotations

from pathlib import Path

from .dispatch import open_dataset
from .errors import DatasetError

__all__ = ["OUTPUT_FORMATS", "convert", "output_format"]

OUTPUT_FORMATS = {
    "s2ef": "folder of N.extxyz + N.txt (OC20 S2EF raw layout)",
    "s2ef-xz": "the same, xz-compressed as the OC20 downloads",
    "extxyz": "one extended XYZ file (.xz suffix compresses)",
    "aselmdb": "fairchem ASE-LMDB (.aselmdb); also .db / .json ASE databases",
    "pyg-lmdb": "legacy OC20 LMDB of pickled PyG Data (.lmdb)",
}


def output_format(dst: str | Path) -> str:
    """Output format implied by the destination name (a name without suffix means an S2EF folder)."""
    name = Path(dst).name.lower()
    if name.endswith((".aselmdb", ".db", ".json")):
        return "aselmdb"
    if name.endswith(".lmdb"):
        return "pyg-lmdb"
    if name.endswith((".xyz", ".extxyz", ".xyz.xz", ".extxyz.xz")):
        return "extxyz"
    if "." not in name:
        return "s2ef"
    raise DatasetError(
        dst,
        "cannot tell the output format from the name",
        hint="pass --format, one of " + ", ".join(OUTPUT_FORMATS),
    )


def convert(
    src: str | Path,
    dst: str | Path,
    fmt: str | None = None,
    frames_per_file: int = 5000,
    progress: bool = False,
    **read_opts,
) -> int:
    """Copy every frame of ``src`` into ``dst``; returns the number of frames written.

    ``read_opts`` go to :func:`open_dataset` (``allow_pickle``, ``energy_key``, ...). Frames are
    read with ``require=()`` unless given, so unlabelled structures convert too; labels, tags,
    fixed atoms, ``sid``/``fid`` and S2EF reference energies are carried over. Energies are
    written as read (total energies unless ``referenced=True`` was passed; S2EF output converts
    referenced energies back to totals).
    """
    fmt = fmt or output_format(dst)
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    dst = Path(dst)
    if dst.exists() and (dst.is_file() or any(dst.iterdir())):
        raise DatasetError(dst, "already exists", hint="choose a new destination; convert never overwrites")
    read_opts.setdefault("require", ())
    reader = open_dataset(src, **read_opts)
    frames = iter(reader)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=len(reader), desc=f"{Path(src).name} -> {dst.name}", unit="frame")
    if fmt in ("s2ef", "s2ef-xz"):
        from .oc20 import write_s2ef

        return write_s2ef(frames, dst, frames_per_file=frames_per_file, compress=fmt == "s2ef-xz")
    if fmt == "extxyz":
        from .extxyz import write_extxyz

        return write_extxyz(dst, frames)
    if fmt == "aselmdb":
        from .asedb import write_ase_db

        return write_ase_db(dst, frames)
    from .lmdb import write_pyg_lmdb

    return write_pyg_lmdb(dst, frames)
