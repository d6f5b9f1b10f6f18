"""Graphs from ``ase.Atoms`` (the datasets' graph contract) and input validation.

Contract (shared with ``equitensor.datasets``): a ``torch_geometric`` ``Data``/``Batch`` with
``pos [N, 3]`` (Å), ``atomic_numbers`` long ``[N]``, ``cell [B, 3, 3]`` (rows are lattice vectors,
zeros when non-periodic), ``pbc`` bool ``[B, 3]``, ``edge_index`` long ``[2, E]`` (sender
``i = edge_index[0]``, receiver ``j = edge_index[1]``), ``cell_offsets [E, 3]`` (integer-valued)
so that the edge vector is ``pos[j] - pos[i] + cell_offsets @ cell[batch[i]]`` (ASE "ijS"),
``batch [N]``, ``ptr``, ``natoms [B]``; labels ``energy [B]``, ``forces [N, 3]``, ``stress [B, 3, 3]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase.data import chemical_symbols
from torch_geometric.data import Data

from ..datasets.graph import AtomsToGraph
from .outputs import GraphTensors


def check_atoms(atoms) -> None:
    """``ValueError`` for non-finite positions or a singular cell along periodic directions."""
    positions = np.asarray(atoms.positions)
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"atom {k} ({atoms.get_chemical_symbols()[k]}) has a non-finite position {positions[k].tolist()}"
            + (f" ({bad.size} atoms in all)" if bad.size > 1 else "")
        )
    if np.any(atoms.pbc):
        cell = np.asarray(atoms.cell[:])
        if abs(np.linalg.det(cell)) < 1e-9:
            raise ValueError(f"cell {cell.tolist()} is singular but pbc={atoms.pbc.tolist()} is set")


def atoms_to_graph(atoms, r_max: float, dtype: torch.dtype | None = None, with_labels: bool = False) -> Data:
    """One ``Data`` graph of ``atoms`` with every pair within ``r_max`` (Å) as an edge, both directions.

    Args:
        atoms: ``ase.Atoms`` (periodic or not).
        r_max: cutoff radius in Å.
        dtype: float dtype of ``pos``, ``cell``, ``cell_offsets`` (default: torch's default dtype).
        with_labels: also store ``energy``, ``forces`` (unconstrained) and ``stress`` from
            ``atoms.calc.results`` when present.
    """
    dtype = dtype or torch.get_default_dtype()
    check_atoms(atoms)
    data = AtomsToGraph(r_max, dtype, labels=False)(atoms)
    results = getattr(atoms.calc, "results", {}) if with_labels and atoms.calc is not None else {}
    if "energy" in results:
        data.energy = torch.tensor([results["energy"]], dtype=dtype)
    if "forces" in results:
        data.forces = torch.tensor(np.asarray(results["forces"]), dtype=dtype)
    if "stress" in results:
        from ase.stress import voigt_6_to_full_3x3_stress

        stress = np.asarray(results["stress"])
        stress = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress
        data.stress = torch.tensor(stress, dtype=dtype).reshape(1, 3, 3)
    return data


def element_name(z: int) -> str:
    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}"


def unknown_element_error(atom: int, z: int, allowed: Sequence[int]) -> ValueError:
    """The error for atom ``atom`` of element ``z``, which a model knowing ``allowed`` does not know."""
    names = ", ".join(f"{element_name(a)} ({a})" for a in allowed)
    return ValueError(
        f"atom {atom} is {element_name(z)} (Z={z}), which this model does not know; allowed elements: {names}"
    )


def check_graph(graph: GraphTensors, element_index: torch.Tensor, allowed: Sequence[int]) -> None:
    """``ValueError`` naming the first unknown element, non-finite position, singular periodic cell
    or out-of-range edge of ``graph``: the check of a model's inputs, for any model.

    ``element_index [N]`` is each atom's position in ``allowed`` (the model's elements), ``-1``
    for an element outside it. One device-to-host read on valid input.
    """
    n = graph.pos.shape[0]
    edges = graph.edge_index
    flags = torch.stack(
        [
            (element_index < 0).any(),
            ~torch.isfinite(graph.pos).all(),
            (graph.pbc.any(dim=1) & (torch.linalg.det(graph.cell).abs() < 1e-9)).any(),
            ((edges < 0) | (edges >= n)).any() if edges.numel() else torch.zeros((), dtype=torch.bool),
        ]
    ).tolist()
    if not any(flags):
        return
    if flags[0]:
        k = int(torch.nonzero(element_index < 0)[0, 0])
        raise unknown_element_error(k, int(graph.atomic_numbers[k]), allowed)
    if flags[1] or flags[2]:
        _check_positions_and_cells(graph.pos, graph.cell, graph.pbc, graph.atomic_numbers)
        raise AssertionError("an input check flagged the batch but the detailed checks found nothing")
    low, high = (int(v) for v in torch.aminmax(edges))
    raise ValueError(
        f"edge_index refers to atoms outside [0, {n}) (range {low}..{high}); rebuild the graph "
        "(equitensor.models.atoms_to_graph or the datasets' AtomsToGraph)"
    )


def _check_positions_and_cells(
    pos: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, atomic_numbers: torch.Tensor
) -> None:
    """``ValueError`` for non-finite positions or singular periodic cells (names the atom / graph)."""
    finite = torch.isfinite(pos).all(dim=1)
    if not bool(finite.all()):
        k = int(torch.nonzero(~finite)[0, 0])
        z = int(atomic_numbers[k])
        raise ValueError(f"atom {k} ({element_name(z)}) has a non-finite position {pos[k].tolist()}")
    periodic = pbc.any(dim=1)
    if bool(periodic.any()):
        singular = periodic & (torch.linalg.det(cell).abs() < 1e-9)
        if bool(singular.any()):
            b = int(torch.nonzero(singular)[0, 0])
            raise ValueError(
                f"graph {b} has a singular cell {cell[b].tolist()} but pbc={pbc[b].tolist()} is set"
            )
