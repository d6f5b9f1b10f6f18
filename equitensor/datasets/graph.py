"""Frames -> graphs: the ``torch_geometric.data.Data`` contract every model codes against.

Fields (N atoms, E edges):

- ``pos`` [N, 3] float (Å); ``atomic_numbers`` [N] long; ``natoms`` [1] long;
- ``cell`` [1, 3, 3] float, rows are lattice vectors; all zeros when no direction is periodic;
- ``pbc`` [1, 3] bool;
- ``edge_index`` [2, E] long: row 0 sender ``i``, row 1 receiver ``j``;
- ``cell_offsets`` [E, 3] float (integer-valued image shifts ``S``), so the edge vector is
  ``pos[j] - pos[i] + cell_offsets @ cell`` (ASE's "ijS" convention), 0 < |D| < r_max,
  both directions present, no self edge with zero shift;
- ``tags`` [N] long (OC20: 0 fixed sub-surface, 1 surface, 2 adsorbate; 0 for molecules);
  ``fixed`` [N] bool;
- labels when the frame has them: ``energy`` [1] float (eV; referenced if the reader said so),
  ``forces`` [N, 3] float (eV/Å, raw, also on fixed atoms), ``stress`` [1, 3, 3] float
  (eV/Å^3, ASE sign convention);
- ``sid``, ``fid`` ints when known.

Batch with ``torch_geometric.loader.DataLoader``: ``edge_index`` is offset per graph and
``batch``/``ptr`` are added.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from ase import Atoms
from torch.utils.data import Dataset
from torch_geometric.data import Data

from .base import FrameReader
from .errors import DatasetError
from .frames import fixed_mask, frame_labels
from .neighbors import neighbor_list, shortest_edge_length

__all__ = ["MIN_DISTANCE", "AtomsToGraph", "GraphDataset", "check_no_coincident_atoms", "free_atom_mask"]


class AtomsToGraph:
    """Convert one labelled ``ase.Atoms`` frame into a graph ``Data`` (contract in module doc).

    Args:
        r_max: cutoff radius (Å) of the radius graph.
        dtype: floating dtype of ``pos``, ``cell``, ``cell_offsets`` and the labels.
        labels: attach ``energy``/``forces``/``stress`` when the frame has them.
    """

    def __init__(self, r_max: float, dtype: torch.dtype = torch.float64, labels: bool = True):
        if not r_max > 0:
            raise ValueError(f"r_max must be > 0, got {r_max}")
        self.r_max = float(r_max)
        self.dtype = dtype
        self.labels = labels

    def __call__(self, atoms: Atoms) -> Data:
        """The graph of ``atoms``.

        Raises:
            DatasetError (without file; :class:`GraphDataset` adds it): no atoms, or two atoms
            (or an atom and a periodic image) closer than :data:`MIN_DISTANCE`.
        """
        if len(atoms) == 0:
            raise DatasetError(None, "the structure has no atoms", hint="a graph needs at least one atom")
        pos = np.asarray(atoms.positions, dtype=np.float64)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        i, j, shifts = frame_neighbors(atoms, self.r_max)
        check_no_coincident_atoms(atoms, i, j, shifts)
        if not pbc.any():
            cell = np.zeros((3, 3))
        n = len(atoms)
        data = Data(
            pos=torch.tensor(pos, dtype=self.dtype),
            atomic_numbers=torch.tensor(atoms.numbers, dtype=torch.long),
            cell=torch.tensor(cell, dtype=self.dtype).view(1, 3, 3),
            pbc=torch.tensor(pbc, dtype=torch.bool).view(1, 3),
            edge_index=torch.from_numpy(np.stack([i, j])).long(),
            cell_offsets=torch.from_numpy(shifts).to(self.dtype),
            natoms=torch.tensor([n], dtype=torch.long),
            tags=torch.tensor(atoms.get_tags(), dtype=torch.long),
            fixed=torch.from_numpy(fixed_mask(atoms)),
        )
        if self.labels:
            labels = frame_labels(atoms)
            if "energy" in labels:
                data.energy = torch.tensor([labels["energy"]], dtype=self.dtype)
            if "forces" in labels:
                data.forces = torch.tensor(labels["forces"], dtype=self.dtype)
            if "stress" in labels:
                data.stress = torch.tensor(labels["stress"], dtype=self.dtype).view(1, 3, 3)
        for key in ("sid", "fid"):
            value = atoms.info.get(key)
            if isinstance(value, int | np.integer):
                data[key] = int(value)
        return data


def frame_neighbors(atoms: Atoms, r_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, S)`` of ``atoms``'s radius graph, exactly the edges :class:`AtomsToGraph` gives it
    (senders [E], receivers [E], image shifts [E, 3]; see :func:`~.neighbors.neighbor_list`)."""
    pos = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    return neighbor_list(pos, cell, np.asarray(atoms.pbc, dtype=bool), r_max)


#: atoms closer than this (Å) are the same position: a duplicated atom, never a structure
#: (the neighbour list drops zero-length pairs, so the energy would jump at d = 0)
MIN_DISTANCE = 1e-3


def check_no_coincident_atoms(atoms: Atoms, i: np.ndarray, j: np.ndarray, shifts: np.ndarray) -> None:
    """:class:`DatasetError` naming two atoms of ``atoms`` at the same position (closer than
    :data:`MIN_DISTANCE`, periodic images included), given the neighbour list ``(i, j, shifts)``."""
    pos = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    pair = None
    # The one-pass kernel screens every frame; the exact distances are computed only when it
    # finds an edge near the threshold (its rounding differs from numpy's in the last bits).
    if len(i) and shortest_edge_length(pos, cell, i, j, np.ascontiguousarray(shifts)) < 2 * MIN_DISTANCE:
        distance = np.linalg.norm(pos[j] - pos[i] + shifts @ cell, axis=1)
        close = np.flatnonzero(distance < MIN_DISTANCE)
        if close.size:
            pair = (int(i[close[0]]), int(j[close[0]]), float(distance[close[0]]))
    if pair is None:  # exactly coincident atoms give zero-length pairs, which the neighbour list omits
        pair = _identical_positions(atoms, pos)
    if pair is not None:
        a, b, distance = pair
        symbols = atoms.get_chemical_symbols()
        image = " (a periodic image)" if a == b else ""
        raise DatasetError(
            None,
            f"atoms {a} ({symbols[a]}) and {b} ({symbols[b]}){image} are at the same position "
            f"(distance {distance:.3g} Å < {MIN_DISTANCE} Å)",
            hint="remove the duplicated atom",
        )


def _identical_positions(atoms: Atoms, pos: np.ndarray) -> tuple[int, int, float] | None:
    """``(a, b, 0.0)`` for the first atom ``b`` whose position (wrapped into the cell when fully
    periodic) repeats that of an earlier atom ``a``; None when all positions differ."""
    periodic = np.asarray(atoms.pbc).all()
    # + 0.0 turns -0.0 into 0.0, so the screen and np.unique agree on which rows are equal
    keys = (np.round(atoms.get_scaled_positions(wrap=True), 9) % 1.0 if periodic else pos) + 0.0
    order = np.lexsort(keys.T[::-1])
    if not (keys[order[1:]] == keys[order[:-1]]).all(axis=1).any():  # cheap screen, no repeats
        return None
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    first_of_group = first[inverse.reshape(-1)]
    second = int(np.flatnonzero(first_of_group != np.arange(len(keys)))[0])
    return int(first_of_group[second]), second, 0.0


class GraphDataset(Dataset):
    """A torch ``Dataset`` of graphs built on the fly from a frame reader.

    Args:
        reader: any :class:`~equitensor.datasets.base.FrameReader` (or sequence of ``Atoms``).
        r_max: cutoff radius (Å).
        dtype: float dtype of the graphs (default float64, as readers deliver).
        transform: optional callable applied to each ``Data`` after conversion.
    """

    def __init__(
        self,
        reader: FrameReader,
        r_max: float,
        dtype: torch.dtype = torch.float64,
        transform: Callable[[Data], Data] | None = None,
    ):
        self.reader = reader
        self.converter = AtomsToGraph(r_max, dtype)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> Data:
        atoms = self.reader[index]
        try:
            data = self.converter(atoms)
        except DatasetError as error:
            if error.path is not None:
                raise
            locate = getattr(self.reader, "_locate", None)
            path, frame = locate(int(index)) if locate is not None else (None, int(index))
            raise error.located(path, frame) from None
        return self.transform(data) if self.transform is not None else data


def free_atom_mask(data: Data) -> torch.Tensor:
    """[N] bool mask of the atoms whose forces OC20 metrics count (``fixed == False``).

    OC20 reports force MAE/cosine on free atoms only; training still uses all raw forces.
    Works on single graphs and batches alike; graphs without ``fixed`` count every atom.
    """
    fixed = getattr(data, "fixed", None)
    if fixed is None:
        return torch.ones(data.pos.shape[0], dtype=torch.bool, device=data.pos.device)
    return ~fixed.bool()
