"""ASE databases (``.aselmdb`` via ase-db-backends, ``.db`` SQLite, ``.json``) and ``.traj`` files.

Forces: both formats store the raw forces (the ones computed before constraints were applied);
ASE's ``atoms.get_forces()`` would then zero the fixed atoms. These readers copy the stored
arrays into the frame's calculator, so labels stay raw (see :mod:`equitensor.datasets.frames`).

Frame metadata: the row's ``key_value_pairs`` and scalar ``data`` entries (``sid``, ``fid``,
``reference_energy``, ...) are copied into ``atoms.info``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io.trajectory import Trajectory

from .base import DEFAULT_REQUIRE, FrameReader
from .errors import DatasetError
from .frames import attach_labels, frame_labels

__all__ = ["AseDBReader", "TrajectoryReader", "write_ase_db"]

_INFO_KEYS_SKIPPED = {"energy", "forces", "stress"}


def _db_type(path: Path) -> str:
    return {".aselmdb": "aselmdb", ".db": "db", ".json": "json"}.get(path.suffix, "db")


def _connect(path: Path, readonly: bool):
    import ase.db

    kind = _db_type(path)
    if kind == "aselmdb":
        return _lmdb_database_class()(path, readonly=readonly, use_lock_file=False)
    return ase.db.connect(str(path), type=kind, use_lock_file=False)


@functools.cache
def _lmdb_database_class() -> type:
    from ase_db_backends.aselmdb import LMDBDatabase

    class SafeLMDBDatabase(LMDBDatabase):
        """ase-db-backends' database whose finaliser never reopens the file.

        Upstream ``__del__`` calls ``close()``, which opens the environment first when it is not
        open in this process: after a failed open (corrupt file) that raises again in the
        finaliser, and after a ``fork`` it opens the file just to close it.
        """

        def __del__(self) -> None:
            env = self.__dict__.get("_env")
            if env is not None and self.__dict__.get("_env_pid") == os.getpid():
                env.close()

    return SafeLMDBDatabase


def _raw_labels(atoms: Atoms) -> dict:
    """Labels of a frame whose calculator came from ASE storage (already the raw stored arrays)."""
    results = atoms.calc.results if atoms.calc is not None else {}
    return {k: results[k] for k in ("energy", "forces", "stress") if results.get(k) is not None}


def _drop_inherited(db) -> None:
    """Release a database handle inherited through ``fork`` (e.g. by a DataLoader worker).

    py-lmdb refuses to open a file that is already open in the process, and the parent's LMDB
    environment is, in the child's copy of memory. Closing the child's copy unmaps it and closes
    the child's file descriptor only; the parent is unaffected (the env is read-only, unlocked).
    """
    env = db.__dict__.get("_env")
    if env is not None:
        env.close()
        db.__dict__["_env"] = None
    # ase-db-backends' __del__ calls close(), which would reopen the file just to close it.
    db.close = lambda: None


class AseDBReader(FrameReader):
    """ASE database reader: ``.aselmdb`` (fairchem), ``.db`` (SQLite) or ``.json``.

    The row ids are listed once when the reader is built; rows are fetched on access.
    """

    def __init__(self, path: str | Path, require: Sequence[str] = DEFAULT_REQUIRE, rebuild_tags: bool = True):
        super().__init__(path, require, rebuild_tags)
        if not self.path.is_file():
            raise DatasetError(self.path, "file does not exist")
        self._db = None
        self._pid = None
        try:
            db = self.db
            if hasattr(db, "ids"):  # aselmdb keeps its id list in memory
                self.ids = [int(i) for i in db.ids]
            else:
                self.ids = [int(row.id) for row in db.select(include_data=False)]
        except DatasetError:
            raise
        except Exception as err:
            raise DatasetError(
                self.path,
                f"cannot read as an ASE database: {type(err).__name__}: {err}",
                hint="the file is corrupt or not an ASE database",
            ) from err

    @property
    def db(self):
        if self._db is not None and self._pid != os.getpid():
            _drop_inherited(self._db)
            self._db = None
        if self._db is None:
            self._db, self._pid = _connect(self.path, readonly=True), os.getpid()
        return self._db

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_db"] = None
        return state

    def release(self) -> None:
        if self._db is not None:
            _drop_inherited(self._db)  # closes this process's handle without reopening the file
            self._db = None

    def __len__(self) -> int:
        return len(self.ids)

    def _read(self, index: int) -> Atoms:
        try:
            row = self.db.get(id=self.ids[index])
        except Exception as err:
            self.release()  # a half-open handle would try to reopen the broken file when collected
            raise DatasetError(self.path, f"cannot read row id {self.ids[index]}: {err}", index) from err
        atoms = row.toatoms()
        labels = _raw_labels(atoms)
        attach_labels(atoms, **labels)
        info = dict(row.get("key_value_pairs", {}))
        data = row.get("data", {}) or {}
        info.update({k: v for k, v in data.items() if np.isscalar(v)})
        atoms.info.update({k: v for k, v in info.items() if k not in _INFO_KEYS_SKIPPED})
        return atoms


class TrajectoryReader(FrameReader):
    """ASE ``.traj`` reader (e.g. the OC20 relaxation trajectories), labels = raw stored forces."""

    def __init__(self, path: str | Path, require: Sequence[str] = DEFAULT_REQUIRE, rebuild_tags: bool = True):
        super().__init__(path, require, rebuild_tags)
        if not self.path.is_file():
            raise DatasetError(self.path, "file does not exist")
        self._traj = None
        self._pid = None
        try:
            self._length = len(self.traj)
        except Exception as err:
            raise DatasetError(
                self.path, f"cannot read as an ASE trajectory: {type(err).__name__}: {err}"
            ) from err

    @property
    def traj(self) -> Trajectory:
        if self._traj is None or self._pid != os.getpid():
            self._traj, self._pid = Trajectory(str(self.path), "r"), os.getpid()
        return self._traj

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_traj"] = None
        return state

    def release(self) -> None:
        if self._traj is not None and self._pid == os.getpid():
            self._traj.close()
        self._traj = None

    def __len__(self) -> int:
        return self._length

    def _read(self, index: int) -> Atoms:
        try:
            atoms = self.traj[index]
        except Exception as err:
            raise DatasetError(self.path, f"cannot read frame: {type(err).__name__}: {err}", index) from err
        # Equivalent to atoms.get_forces(apply_constraint=False): the stored, unconstrained array.
        return attach_labels(atoms, **_raw_labels(atoms))


def write_ase_db(path: str | Path, frames: Iterable[Atoms], info_keys: Sequence[str] | None = None) -> int:
    """Write frames to an ASE database chosen by suffix (``.aselmdb``, ``.db``, ``.json``).

    Raw labels, constraints and tags are stored; ``atoms.info`` entries that are ints, floats,
    bools or strings (or only ``info_keys`` if given) become key-value pairs. Returns the count.
    """
    from ase.db.core import reserved_keys

    path = Path(path)
    db = _connect(path, readonly=False)
    count = 0
    with db:
        for atoms in frames:
            labels = frame_labels(atoms)
            atoms = atoms.copy()
            attach_labels(atoms, **labels)
            keys = info_keys if info_keys is not None else atoms.info.keys()
            kvp = {}
            for k in keys:
                v = atoms.info.get(k)
                if isinstance(v, np.generic):
                    v = v.item()
                if isinstance(v, bool | int | float | str) and k.isidentifier() and k not in reserved_keys:
                    kvp[k] = v
            db.write(atoms, key_value_pairs=kvp)
            count += 1
    if hasattr(db, "close"):
        db.close()
    return count
