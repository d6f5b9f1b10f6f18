"""Per-atom predictions of ``equitensor evaluate``: an extxyz file and an energy/force parity plot.

:class:`PredictionWriter` is passed to :func:`~equitensor.train.evaluate.evaluate_model` as its
``on_batch`` callback: each batch's structures, reference and predicted labels are appended to
the extxyz file as they come (MACE's naming: ``REF_energy`` / ``REF_forces`` for the data,
``pred_energy`` / ``pred_forces`` for the model), so memory stays bounded; the file is written
to a temporary name, fsynced and renamed when :meth:`close` is called.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from .losses import force_mask

__all__ = ["PredictionWriter", "plot_parity"]


class PredictionWriter:
    """Streams predictions to ``path`` (extxyz) and keeps what the parity plot needs.

    Args:
        path: the extxyz file to write (replaced atomically on :meth:`close`).
        free_atoms_only: parity points of forces only for free atoms (``fixed == False``), as
            the metrics; the extxyz file holds every atom and a ``fixed`` column.
    """

    def __init__(self, path: str | Path, free_atoms_only: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._handle = open(self._tmp, "w", encoding="utf-8")
        self.free_atoms_only = free_atoms_only
        self.energies: list[np.ndarray] = []  # [true, pred] per atom, per batch
        self.forces: list[np.ndarray] = []  # [true, pred] components, per batch
        self.frames = 0

    def __call__(self, batch, pred: dict) -> None:
        ptr = batch.ptr.tolist()
        natoms = np.diff(ptr)
        e_true, e_pred = _array(batch.energy).reshape(-1), _array(pred["energy"]).reshape(-1)
        f_true, f_pred = _array(batch.forces), _array(pred["forces"])
        mask = force_mask(batch, self.free_atoms_only)
        keep = np.ones(len(f_true), dtype=bool) if mask is None else mask.cpu().numpy()
        self.energies.append(np.stack([e_true / natoms, e_pred / natoms]))
        self.forces.append(np.stack([f_true[keep].ravel(), f_pred[keep].ravel()]))
        positions, numbers = _array(batch.pos), batch.atomic_numbers.cpu().numpy()
        cells, pbc = _array(batch.cell).reshape(-1, 3, 3), batch.pbc.reshape(-1, 3).cpu().numpy()
        fixed = getattr(batch, "fixed", None)
        fixed = fixed.cpu().numpy().astype(bool) if fixed is not None else np.zeros(len(numbers), dtype=bool)
        for g in range(batch.num_graphs):
            atoms_slice = slice(ptr[g], ptr[g + 1])
            atoms = Atoms(
                numbers=numbers[atoms_slice], positions=positions[atoms_slice], cell=cells[g], pbc=pbc[g]
            )
            atoms.info.update(frame=self.frames, REF_energy=float(e_true[g]), pred_energy=float(e_pred[g]))
            atoms.arrays["REF_forces"] = f_true[atoms_slice]
            atoms.arrays["pred_forces"] = f_pred[atoms_slice]
            atoms.arrays["fixed"] = fixed[atoms_slice]
            write(self._handle, atoms, format="extxyz")
            self.frames += 1

    def close(self) -> Path:
        """Flush, fsync and move the file into place; returns its path."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._tmp.replace(self.path)
        return self.path


def _array(tensor) -> np.ndarray:
    """float64 numpy copy of a (possibly grad-tracking, device) tensor."""
    return tensor.detach().double().cpu().numpy()


def plot_parity(writer: PredictionWriter, path: str | Path) -> Path:
    """Predicted against reference energy per atom and force components, as a PNG (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    energies = np.concatenate(writer.energies, axis=1) if writer.energies else np.zeros((2, 0))
    forces = np.concatenate(writer.forces, axis=1) if writer.forces else np.zeros((2, 0))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, (true, pred), label, unit in (
        (axes[0], energies, "energy per atom", "eV/atom"),
        (axes[1], forces, "force components", "eV/Å"),
    ):
        ax.scatter(true, pred, s=4, alpha=0.5)
        if true.size:
            low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
            ax.plot([low, high], [low, high], "k--", lw=0.8)
            mae = float(np.abs(pred - true).mean())
            ax.set_title(f"{label}: MAE {1e3 * mae:.1f} m{unit}")
        ax.set(xlabel=f"reference ({unit})", ylabel=f"predicted ({unit})")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
