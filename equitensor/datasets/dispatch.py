"""``open_dataset``: pick the reader for a path from its suffix or folder contents."""

from __future__ import annotations

from pathlib import Path

from .base import FrameReader
from .errors import DatasetError

__all__ = ["ACCEPTED_FORMATS", "detect_format", "open_dataset"]

ACCEPTED_FORMATS = (
    "folder of N.extxyz[.xz] + N.txt[.xz] (OC20 S2EF raw)",
    ".lmdb file, LMDB folder or folder of .lmdb files (legacy OC20/OC22, needs allow_pickle=True)",
    ".aselmdb (fairchem ASE-LMDB)",
    ".db or .json (ASE database)",
    ".traj (ASE trajectory)",
    ".xyz / .extxyz, optionally .xz (extended XYZ)",
)


def detect_format(path: str | Path) -> str:
    """One of ``s2ef``, ``lmdb``, ``aselmdb``, ``asedb``, ``traj``, ``extxyz``; DatasetError otherwise."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        from .oc20 import find_s2ef_pairs

        if (path / "data.mdb").exists() or any(path.glob("*.lmdb")):
            return "lmdb"
        if find_s2ef_pairs(path):
            return "s2ef"
        if any(path.glob("*.aselmdb")):
            raise DatasetError(
                path,
                "folder of .aselmdb files: open each file, or concatenate readers",
                hint="pass one .aselmdb file",
            )
    elif not path.exists():
        raise DatasetError(path, "does not exist")
    elif name.endswith(".lmdb"):
        return "lmdb"
    elif name.endswith(".aselmdb"):
        return "aselmdb"
    elif name.endswith((".db", ".json")):
        return "asedb"
    elif name.endswith(".traj"):
        return "traj"
    elif name.endswith((".xyz", ".extxyz", ".xyz.xz", ".extxyz.xz")):
        return "extxyz"
    raise DatasetError(path, "unrecognised dataset format", hint="accepted: " + "; ".join(ACCEPTED_FORMATS))


def open_dataset(path: str | Path, **opts) -> FrameReader:
    """Open any supported dataset as a lazy frame reader.

    ``opts`` go to the reader: ``require``, ``rebuild_tags`` (all); ``referenced`` (S2EF);
    ``allow_pickle`` (LMDB); ``energy_key``, ``forces_key``, ``stress_key``, ``split_isolated``
    (extxyz). Options that do not apply to the detected format raise a TypeError.
    """
    kind = detect_format(path)
    if kind == "s2ef":
        from .oc20 import S2EFReader as cls
    elif kind == "lmdb":
        from .lmdb import PyGLmdbReader as cls
    elif kind in ("aselmdb", "asedb"):
        from .asedb import AseDBReader as cls
    elif kind == "traj":
        from .asedb import TrajectoryReader as cls
    else:
        from .extxyz import ExtXYZReader as cls
    return cls(path, **opts)
