"""The frame convention shared by every reader, and its validation.

Every reader returns ``ase.Atoms`` frames laid out the same way:

- labels live in a ``SinglePointCalculator``: ``energy`` (eV), ``forces`` [N, 3] (eV/Å, the RAW
  DFT forces on every atom, never zeroed by constraints) and optionally ``stress`` (eV/Å^3,
  ASE sign convention, stored as the 3x3 matrix). Read them with :func:`frame_labels`, or with
  ``atoms.get_forces(apply_constraint=False)``; plain ``atoms.get_forces()`` zeroes fixed atoms.
- fixed atoms are a ``FixAtoms`` constraint (:func:`fixed_mask` reads it back);
- OC20 tags (0 fixed sub-surface, 1 surface, 2 adsorbate, 0 for molecules) in ``atoms.get_tags()``;
- bookkeeping in ``atoms.info``: ``sid``, ``fid`` (ints) when known, ``reference_energy`` (eV)
  for OC20 S2EF data, ``energy_referenced`` (bool) when ``energy`` already had it subtracted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from .errors import DatasetError

__all__ = [
    "attach_labels",
    "fixed_mask",
    "frame_labels",
    "set_fixed",
    "stress_matrix",
    "validate_frame",
]

LABELS = ("energy", "forces", "stress")


def stress_matrix(stress) -> np.ndarray:
    """Stress as a [3, 3] float64 matrix from ASE Voigt order (xx, yy, zz, yz, xz, xy) or 3x3/9."""
    s = np.asarray(stress, dtype=np.float64).reshape(-1)
    if s.size == 9:
        return s.reshape(3, 3)
    if s.size == 6:
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"stress must have 6 (Voigt) or 9 entries, got {s.size}")


def attach_labels(atoms: Atoms, energy=None, forces=None, stress=None) -> Atoms:
    """Replace ``atoms.calc`` by a SinglePointCalculator holding exactly the given labels."""
    results = {}
    if energy is not None:
        results["energy"] = float(energy)
    if forces is not None:
        results["forces"] = np.asarray(forces, dtype=np.float64).reshape(len(atoms), 3)
    if stress is not None:
        results["stress"] = stress_matrix(stress)
    atoms.calc = SinglePointCalculator(atoms, **results) if results else None
    return atoms


def frame_labels(atoms: Atoms) -> dict[str, np.ndarray | float]:
    """Labels attached to a frame: a dict with any of ``energy``, ``forces`` (raw), ``stress`` [3,3]."""
    if atoms.calc is None:
        return {}
    results = atoms.calc.results
    out: dict[str, np.ndarray | float] = {}
    if results.get("energy") is not None:
        out["energy"] = float(results["energy"])
    if results.get("forces") is not None:
        # The stored array, not atoms.get_forces(): that would apply FixAtoms and zero labels.
        out["forces"] = np.asarray(results["forces"], dtype=np.float64)
    if results.get("stress") is not None:
        out["stress"] = stress_matrix(results["stress"])
    return out


def fixed_mask(atoms: Atoms) -> np.ndarray:
    """[N] bool, True for atoms held by a ``FixAtoms`` constraint (other constraints are ignored)."""
    mask = np.zeros(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            mask[constraint.get_indices()] = True
    return mask


def set_fixed(atoms: Atoms, fixed) -> Atoms:
    """Replace the constraints by one ``FixAtoms`` for the atoms where ``fixed`` is True."""
    fixed = np.asarray(fixed, dtype=bool).reshape(-1)
    atoms.set_constraint(FixAtoms(mask=fixed) if fixed.any() else None)
    return atoms


def validate_frame(
    atoms: Atoms, path: str | Path | None, index: int | None, require: Sequence[str] = ()
) -> Atoms:
    """Check a frame is usable as data; raise :class:`DatasetError` naming file and frame if not.

    Checks: at least one atom; finite positions, cell, labels; a non-singular cell along the
    periodic directions; forces shaped [N, 3]; every label named in ``require`` present.
    """
    n = len(atoms)
    if n == 0:
        raise DatasetError(path, "frame has zero atoms", index, "remove the empty frame from the file")
    pos = atoms.positions
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        atom = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            path,
            f"position of atom {atom} is not finite ({pos[atom].tolist()})",
            index,
            "fix or drop this frame; NaN/inf coordinates usually come from a failed calculation",
        )
    if not np.isfinite(atoms.cell.array).all():
        raise DatasetError(path, "cell has non-finite entries", index)
    periodic_rows = atoms.cell.array[np.asarray(atoms.pbc, dtype=bool)]
    tolerance = 1e-10 * max(1.0, float(np.abs(periodic_rows).max(initial=0.0)))
    if len(periodic_rows) and np.linalg.matrix_rank(periodic_rows, tol=tolerance) < len(periodic_rows):
        raise DatasetError(
            path,
            f"cell {atoms.cell.array.tolist()} is singular along its periodic directions "
            f"(pbc={atoms.pbc.tolist()})",
            index,
            "give independent lattice vectors for the periodic directions, or set pbc=False along the others",
        )
    labels = frame_labels(atoms)
    for key in require:
        if key not in labels:
            raise DatasetError(
                path,
                f"label {key!r} is missing",
                index,
                f"pass the right {key}_key= if the file names it differently, or drop {key!r} "
                "from require= to read unlabelled frames",
            )
    if "forces" in labels and labels["forces"].shape != (n, 3):
        raise DatasetError(path, f"forces have shape {labels['forces'].shape}, expected ({n}, 3)", index)
    for key, value in labels.items():
        if not np.isfinite(value).all():
            raise DatasetError(path, f"label {key!r} is not finite", index, "drop or recompute this frame")
    return atoms
