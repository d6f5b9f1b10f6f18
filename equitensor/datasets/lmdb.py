"""Legacy OC20/OC22 LMDB datasets: pickled torch_geometric ``Data`` values.

Layout (fairchem "LmdbDataset"): keys ``b"0" .. b"N-1"``, optionally ``b"length"`` holding the
pickled count; each value is a pickled PyG ``Data`` with ``pos``, ``cell`` [1,3,3],
``atomic_numbers``, ``natoms``, ``tags``, ``fixed``, ``sid``, ``fid`` and the labels ``y`` or
``energy`` (eV; OC20 S2EF LMDBs usually hold referenced energies already) and ``force`` or
``forces``; IS2RE files hold ``y_init``, ``y_relaxed`` and ``pos_relaxed`` instead. Both the
PyG >= 2 layout (attributes in ``_store``) and the PyG < 2 layout (attributes directly in
``__dict__``) are decoded. LMDBs store no ``pbc``: frames are taken as periodic in x, y, z.

SECURITY: unpickling executes code chosen by whoever wrote the file. A malicious LMDB can run
anything with your permissions. This reader therefore refuses to open an LMDB unless you pass
``allow_pickle=True``, which you should do only for files from a source you trust (e.g. the
official fairchem downloads). Prefer ``.aselmdb`` (JSON-encoded, no code execution) for sharing.

Files are opened read-only, without locking, memory-mapped, and reopened in each process (the
LMDB environment handle must not cross a ``fork``), so DataLoader workers are safe.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path

import lmdb
import numpy as np
import torch
from ase import Atoms

from .base import DEFAULT_REQUIRE, FrameReader
from .errors import DatasetError
from .frames import attach_labels, fixed_mask, frame_labels, set_fixed

__all__ = ["PICKLE_WARNING", "PyGLmdbReader", "atoms_to_pyg_data", "data_to_atoms", "write_pyg_lmdb"]

PICKLE_WARNING = (
    "legacy OC20/OC22 LMDB values are Python pickles, and unpickling runs arbitrary code from the "
    "file; pass allow_pickle=True (CLI: --allow-pickle) only if you trust where the file came from, "
    "or convert it once to .aselmdb, which is safe to read"
)


def _open_env(path: Path) -> lmdb.Environment:
    try:
        return lmdb.open(
            str(path),
            subdir=path.is_dir(),
            readonly=True,
            lock=False,
            readahead=False,
            meminit=False,
            max_readers=1024,
        )
    except lmdb.Error as err:
        raise DatasetError(
            path, f"cannot open as LMDB: {err}", hint="the file is not an LMDB database or is corrupt"
        ) from err


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _as_scalar(value):
    if isinstance(value, torch.Tensor | np.ndarray):
        return _as_numpy(value).reshape(-1)[0].item()
    return value


def _mapping(obj) -> dict:
    """Attribute dict of a decoded value: PyG>=2 Data, PyG<2 Data (no ``_store``) or a dict."""
    if isinstance(obj, dict):
        return dict(obj)
    state = getattr(obj, "__dict__", {})
    store = state.get("_store")
    if store is not None:
        return {k: v for k, v in store.items()}
    # PyG < 2: attributes were plain instance attributes; private bookkeeping starts with "__".
    return {
        k: v for k, v in state.items() if v is not None and not k.startswith("__") and not k.startswith("_")
    }


def data_to_atoms(obj, source: Path | None = None, index: int | None = None) -> Atoms:
    """Convert one decoded LMDB value (PyG ``Data`` of either layout, or a dict) to a labelled frame."""
    m = _mapping(obj)
    if "pos" not in m or "atomic_numbers" not in m:
        raise DatasetError(
            source,
            f"entry has no 'pos'/'atomic_numbers' (keys: {sorted(m)})",
            index,
            "this is not an OC20-style structure LMDB",
        )
    pos = _as_numpy(m["pos"]).astype(np.float64).reshape(-1, 3)
    numbers = np.rint(_as_numpy(m["atomic_numbers"]).astype(np.float64)).astype(np.int64).reshape(-1)
    cell = _as_numpy(m["cell"]).astype(np.float64).reshape(3, 3) if "cell" in m else np.zeros((3, 3))
    pbc = _as_numpy(m["pbc"]).astype(bool).reshape(-1) if "pbc" in m else np.array([True] * 3)
    if pbc.size != 3:
        pbc = np.repeat(pbc[:1], 3)
    atoms = Atoms(numbers=numbers, positions=pos, cell=cell, pbc=pbc)
    energy = None
    for key in ("energy", "y", "y_relaxed"):
        if key in m and m[key] is not None:
            energy = float(_as_scalar(m[key]))
            atoms.info["energy_source"] = key
            break
    forces = next((_as_numpy(m[k]).astype(np.float64) for k in ("forces", "force") if k in m), None)
    stress = _as_numpy(m["stress"]).astype(np.float64) if "stress" in m else None
    attach_labels(atoms, energy=energy, forces=forces, stress=stress)
    if "tags" in m:
        atoms.set_tags(_as_numpy(m["tags"]).astype(np.int64).reshape(-1))
    if "fixed" in m:
        set_fixed(atoms, _as_numpy(m["fixed"]).astype(np.float64).reshape(-1) > 0.5)
    if "pos_relaxed" in m:
        atoms.arrays["pos_relaxed"] = _as_numpy(m["pos_relaxed"]).astype(np.float64).reshape(-1, 3)
    for key in ("sid", "fid"):
        if key in m:
            value = _as_scalar(m[key])
            if isinstance(value, str) and value.startswith("random"):
                value = value[len("random") :]
            try:
                atoms.info[key] = int(value)
            except (TypeError, ValueError):
                atoms.info[key] = value
    for key in ("y_init", "y_relaxed", "nads", "oc22", "id"):
        if key in m and m[key] is not None:
            atoms.info[key] = _as_scalar(m[key])
    return atoms


class PyGLmdbReader(FrameReader):
    """Legacy OC20/OC22 LMDB reader (a ``.lmdb`` file, an LMDB folder, or a folder of ``.lmdb`` files).

    Args:
        path: file or folder.
        allow_pickle: must be True, acknowledging that the values are pickles (see module doc).
        require, rebuild_tags: see :class:`FrameReader`; IS2RE LMDBs have no forces, read them
            with ``require=("energy",)`` (energy is then ``y_relaxed``).
    """

    def __init__(
        self,
        path: str | Path,
        allow_pickle: bool = False,
        require: Sequence[str] = DEFAULT_REQUIRE,
        rebuild_tags: bool = True,
    ):
        super().__init__(path, require, rebuild_tags)
        if not allow_pickle:
            raise DatasetError(self.path, "refusing to unpickle", hint=PICKLE_WARNING)
        if not self.path.exists():
            raise DatasetError(self.path, "does not exist")
        if self.path.is_dir() and not (self.path / "data.mdb").exists():
            self.db_paths = sorted(self.path.glob("*.lmdb"))
            if not self.db_paths:
                raise DatasetError(self.path, "folder holds no *.lmdb files and is not an LMDB environment")
        else:
            self.db_paths = [self.path]
        lengths = []
        for db_path in self.db_paths:
            env = _open_env(db_path)
            try:
                with env.begin() as txn:
                    raw = txn.get(b"length")
                    if raw is not None:
                        n = int(self._unpickle(raw, db_path, None))
                    else:
                        n = env.stat()["entries"]
            except lmdb.Error as err:
                raise DatasetError(db_path, f"cannot read LMDB: {err}") from err
            finally:
                env.close()
            lengths.append(n)
        self._ends = np.cumsum(lengths)
        self._envs: dict[int, lmdb.Environment] = {}
        self._pid = os.getpid()

    @staticmethod
    def _unpickle(raw: bytes, path: Path, index: int | None):
        try:
            return pickle.loads(raw)
        except Exception as err:
            raise DatasetError(
                path,
                f"cannot unpickle value: {type(err).__name__}: {err}",
                index,
                "the value is corrupt or needs a package that is not installed",
            ) from err

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_envs"] = {}
        return state

    def _env(self, k: int) -> lmdb.Environment:
        if self._pid != os.getpid():
            # Forked (DataLoader worker): close the child's copies of the parent's handles, as
            # py-lmdb refuses to reopen a file that is open in this process; the parent keeps its own.
            for env in self._envs.values():
                env.close()
            self._envs, self._pid = {}, os.getpid()
        if k not in self._envs:
            self._envs[k] = _open_env(self.db_paths[k])
        return self._envs[k]

    def _locate(self, index: int) -> tuple[Path, int]:
        k = int(np.searchsorted(self._ends, index, side="right"))
        return self.db_paths[k], index - (int(self._ends[k - 1]) if k else 0)

    def _read(self, index: int) -> Atoms:
        k = int(np.searchsorted(self._ends, index, side="right"))
        path, local = self._locate(index)
        try:
            with self._env(k).begin() as txn:
                raw = txn.get(str(local).encode("ascii"))
        except lmdb.Error as err:
            raise DatasetError(path, f"cannot read LMDB: {err}", local) from err
        if raw is None:
            raise DatasetError(
                path,
                f"key {str(local)!r} is missing",
                local,
                "keys must be '0'..'N-1'; the LMDB is incomplete",
            )
        return data_to_atoms(self._unpickle(raw, path, local), path, local)


def atoms_to_pyg_data(atoms: Atoms, dtype: torch.dtype = torch.float32):
    """A frame as the legacy fairchem PyG ``Data`` (``y``, ``force`` naming; float32 like fairchem).

    ``dtype`` applies to ``pos``, ``cell``, ``force`` and ``stress``.
    """
    from torch_geometric.data import Data

    labels = frame_labels(atoms)
    fields = dict(
        pos=torch.tensor(atoms.positions, dtype=dtype),
        cell=torch.tensor(atoms.cell.array, dtype=dtype).view(1, 3, 3),
        atomic_numbers=torch.tensor(atoms.numbers, dtype=torch.float32),
        natoms=len(atoms),
        tags=torch.tensor(atoms.get_tags(), dtype=torch.int64),
        fixed=torch.tensor(fixed_mask(atoms), dtype=torch.float32),
        pbc=torch.tensor(atoms.pbc, dtype=torch.bool).view(1, 3),
    )
    if "energy" in labels:
        fields["y"] = float(labels["energy"])
    if "forces" in labels:
        fields["force"] = torch.tensor(labels["forces"], dtype=dtype)
    if "stress" in labels:
        fields["stress"] = torch.tensor(labels["stress"], dtype=dtype).view(1, 3, 3)
    for key in ("sid", "fid"):
        if key in atoms.info:
            fields[key] = atoms.info[key]
    return Data(**fields)


def write_pyg_lmdb(
    path: str | Path, frames: Iterable[Atoms], dtype=torch.float32, map_size: int = 1 << 36
) -> int:
    """Write frames as a legacy OC20 LMDB (single file, keys ``"0".."N-1"`` + ``"length"``).

    Values are PyG>=2 ``Data`` pickles as fairchem writes them (float32 by default, as fairchem
    does, which rounds positions/forces to ~1e-7 relative; pass ``dtype=torch.float64`` for
    exact round trips). Returns the frame count.
    """
    path = Path(path)
    env = lmdb.open(str(path), subdir=False, map_size=map_size, meminit=False, map_async=True)
    count = 0
    try:
        txn = env.begin(write=True)
        for atoms in frames:
            data = atoms_to_pyg_data(atoms, dtype)
            txn.put(str(count).encode("ascii"), pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
            count += 1
            if count % 1000 == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.put(b"length", pickle.dumps(count, protocol=pickle.HIGHEST_PROTOCOL))
        txn.commit()
        env.sync()
    finally:
        env.close()
    return count
