"""Dataset statistics used to set up training: linear energy references, E0s, scales, neighbours.

Conventions: energies in eV, forces in eV/Å; "per element" dicts map atomic number -> value.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from .frames import fixed_mask, frame_labels

__all__ = [
    "DatasetSummary",
    "TrainingStatistics",
    "avg_num_neighbors",
    "composition_matrix",
    "e0s_from_single_atoms",
    "fit_linear_reference",
    "isolated_atom_e0s",
    "force_rms",
    "reference_residuals",
    "summarize",
    "training_statistics",
]


def _iterate(frames: Iterable[Atoms], progress: bool, desc: str):
    if progress:
        from tqdm import tqdm

        total = len(frames) if hasattr(frames, "__len__") else None
        return tqdm(frames, total=total, desc=desc, unit="frame")
    return frames


def composition_matrix(numbers: Sequence[np.ndarray], elements: Sequence[int]) -> np.ndarray:
    """[F, K] counts: entry (f, k) is how many atoms of element ``elements[k]`` frame f has."""
    column = {int(z): k for k, z in enumerate(elements)}
    counts = np.zeros((len(numbers), len(elements)))
    for f, nums in enumerate(numbers):
        for z, c in Counter(np.asarray(nums).tolist()).items():
            counts[f, column[z]] = c
    return counts


def fit_linear_reference(
    numbers: Sequence[np.ndarray],
    energies: Sequence[float],
    elements: Sequence[int] | None = None,
    warn: bool = True,
) -> dict[int, float]:
    """Per-element energies ``e_Z`` minimising sum_f (E_f - sum_Z n_fZ e_Z)^2 (least squares).

    Args:
        numbers: per frame, its atomic numbers [N_f].
        energies: per frame, its energy (eV).
        elements: the elements to fit (default: those in ``numbers``); one absent from the data
            gets 0 (minimum norm).
        warn: emit a ``UserWarning`` when the fit is under-determined (off where only the
            residual matters, e.g. ``summarize``).

    Elements whose counts are collinear (e.g. always appearing in a fixed ratio) are
    under-determined; ``lstsq`` then returns the minimum-norm solution, which still gives the
    best-fitting total reference for any composition seen in the data.
    """
    if elements is None:
        elements = sorted({int(z) for nums in numbers for z in np.asarray(nums).tolist()})
    A = composition_matrix(numbers, elements)
    coef, _, rank, _ = np.linalg.lstsq(A, np.asarray(energies, dtype=np.float64), rcond=None)
    present = int((A.sum(axis=0) > 0).sum())
    if warn and rank < present:
        warnings.warn(under_determined_message(A, elements, rank), UserWarning, stacklevel=2)
    return {z: float(c) for z, c in zip(elements, coef)}


def under_determined_message(A: np.ndarray, elements: Sequence[int], rank: int) -> str:
    """Why a least-squares E0 fit cannot separate the elements, and what to use instead."""
    from ase.data import chemical_symbols

    compositions = {tuple(row) for row in A.astype(int).tolist()}
    names = ", ".join(chemical_symbols[int(z)] for z in elements)
    return (
        f"the least-squares fit of per-element energies is under-determined: the training data has "
        f"{len(compositions)} distinct composition(s) for the {int((A.sum(axis=0) > 0).sum())} elements "
        f"{names} (rank {rank}), so the fitted E0s are one arbitrary split of the total "
        "(the minimum-norm one), not atomic energies; give isolated-atom energies (data.e0s: isolated "
        "with IsolatedAtom frames, or a mapping {element: eV})"
    )


def isolated_atom_e0s(dataset, elements: Sequence[int]) -> dict[int, float]:
    """E0s of ``elements`` from the isolated-atom frames of the reader under ``dataset``.

    ``dataset`` is a frame reader with ``isolated_atom_energies`` (extxyz frames with
    ``config_type=IsolatedAtom``, as MACE's convention), or a graph dataset / ``Subset`` built on one.

    Raises:
        ValueError: the data has no isolated-atom frames, or none for some of ``elements``.
    """
    from ase.data import chemical_symbols

    from .sources import frame_reader

    reader = frame_reader(dataset)
    energies = dict(getattr(reader, "isolated_atom_energies", None) or {})
    missing = [chemical_symbols[int(z)] for z in elements if int(z) not in energies]
    if missing:
        where = getattr(reader, "path", "the training data")
        raise ValueError(
            f"{where}: no isolated-atom energy for {', '.join(missing)} (e0s: isolated needs one "
            "frame with config_type=IsolatedAtom per element; or give the E0s as a mapping)"
        )
    return {int(z): float(energies[int(z)]) for z in elements}


def e0s_from_single_atoms(frames: Iterable[Atoms]) -> dict[int, float]:
    """E0s from single-atom frames (e.g. a file of isolated atoms without ``config_type``)."""
    out: dict[int, float] = {}
    for atoms in frames:
        if len(atoms) != 1:
            raise ValueError(f"expected single-atom frames for E0s, got one with {len(atoms)} atoms")
        out[int(atoms.numbers[0])] = float(frame_labels(atoms)["energy"])
    return out


def reference_residuals(
    numbers: Sequence[np.ndarray], energies: Sequence[float], reference: Mapping[int, float]
) -> tuple[float, float]:
    """(mean, std) over frames of the per-atom residual ``(E - sum_Z n_Z e_Z) / N`` (eV/atom).

    Typical use: ``reference`` from :func:`fit_linear_reference` or isolated-atom E0s; the mean
    and std are then the shift and scale of the per-atom energy a model should learn.
    """
    residuals = [
        (e - sum(reference[int(z)] for z in np.asarray(nums).tolist())) / len(nums)
        for nums, e in zip(numbers, energies)
    ]
    residuals = np.asarray(residuals)
    return float(residuals.mean()), float(residuals.std())


def force_rms(forces: Iterable[np.ndarray]) -> float:
    """Root mean square of all force components (eV/Å) over all atoms of all frames."""
    total, count = 0.0, 0
    for f in forces:
        f = np.asarray(f, dtype=np.float64)
        total += float(np.square(f).sum())
        count += f.size
    return float(np.sqrt(total / count)) if count else float("nan")


def avg_num_neighbors(graphs: Iterable) -> float:
    """Mean number of edges per atom over graphs (``edge_index`` [2, E], ``pos`` [N, 3])."""
    edges, nodes = 0, 0
    for g in graphs:
        edges += int(g.edge_index.shape[1])
        nodes += int(g.pos.shape[0])
    return edges / nodes if nodes else float("nan")


@dataclass
class DatasetSummary:
    """One-pass summary of a dataset (what ``equitensor data info`` prints)."""

    n_frames: int = 0
    atoms_per_frame: list[int] = field(default_factory=list, repr=False)
    element_counts: Counter = field(default_factory=Counter)
    energies: list[float] = field(default_factory=list, repr=False)
    numbers: list[np.ndarray] = field(default_factory=list, repr=False)
    force_sq_sum: float = 0.0
    force_components: int = 0
    force_max: float = 0.0
    n_fixed: int = 0
    periodic_frames: int = 0

    @property
    def force_rms(self) -> float:
        return (
            float(np.sqrt(self.force_sq_sum / self.force_components))
            if self.force_components
            else float("nan")
        )

    def lines(self) -> list[str]:
        """Human-readable report lines."""
        from ase.data import chemical_symbols

        n_atoms = np.asarray(self.atoms_per_frame)
        out = [f"frames: {self.n_frames}"]
        if self.n_frames == 0:
            return out
        total_atoms = int(n_atoms.sum())
        out.append(
            f"atoms per frame: min {n_atoms.min()}, mean {n_atoms.mean():.1f}, max {n_atoms.max()} "
            f"(total {total_atoms}, fixed {self.n_fixed}, periodic frames {self.periodic_frames})"
        )
        elements = ", ".join(f"{chemical_symbols[z]}:{c}" for z, c in sorted(self.element_counts.items()))
        out.append(f"elements (atom counts): {elements}")
        if self.energies:
            e = np.asarray(self.energies)
            per_atom = e / np.array([len(nums) for nums in self.numbers])
            out.append(
                f"energy (eV): mean {e.mean():.4f}, std {e.std():.4f}, min {e.min():.4f}, max {e.max():.4f}"
            )
            out.append(f"energy per atom (eV/atom): mean {per_atom.mean():.4f}, std {per_atom.std():.4f}")
            if len(e) > len(self.element_counts):
                ref = fit_linear_reference(self.numbers, e, warn=False)  # only the residual is reported
                mean, std = reference_residuals(self.numbers, e, ref)
                out.append(
                    f"after a per-element linear reference: residual per atom mean {mean:.2e}, "
                    f"std {std:.4f} eV/atom"
                )
        if self.force_components:
            out.append(
                f"forces (eV/A, raw, all atoms): rms {self.force_rms:.4f}, max |F| {self.force_max:.4f}"
            )
        return out


def summarize(frames: Iterable[Atoms], progress: bool = False) -> DatasetSummary:
    """Scan every frame once (tqdm progress bar when ``progress``) and collect a summary."""
    s = DatasetSummary()
    for atoms in _iterate(frames, progress, "scanning"):
        s.n_frames += 1
        s.atoms_per_frame.append(len(atoms))
        s.element_counts.update(atoms.numbers.tolist())
        s.periodic_frames += bool(atoms.pbc.any())
        s.n_fixed += int(fixed_mask(atoms).sum())
        labels = frame_labels(atoms)
        if "energy" in labels:
            s.energies.append(float(labels["energy"]))
            s.numbers.append(atoms.numbers.copy())
        if "forces" in labels:
            f = labels["forces"]
            s.force_sq_sum += float(np.square(f).sum())
            s.force_components += f.size
            s.force_max = max(s.force_max, float(np.linalg.norm(f, axis=1).max()))
    return s


@dataclass(frozen=True)
class TrainingStatistics:
    """What a MACE-style model needs from its training set (see :func:`training_statistics`).

    ``atomic_energies``: per-element reference {Z: eV} (given E0s, or a least-squares fit);
    ``energy_shift``/``energy_scale``: mean/std of the per-atom residual energy (eV/atom);
    ``force_rms``: RMS force component (eV/Å); ``avg_num_neighbors``: mean edges per atom.
    """

    atomic_energies: dict[int, float]
    energy_shift: float
    energy_scale: float
    force_rms: float
    avg_num_neighbors: float
    n_graphs: int


def training_statistics(
    graphs: Iterable, atomic_energies: Mapping[int, float] | None = None, progress: bool = False
) -> TrainingStatistics:
    """One pass over graphs (``GraphDataset`` items or any iterable of them).

    If ``atomic_energies`` (e.g. isolated-atom E0s) is None they are fitted by least squares.
    Graphs without ``energy``/``forces`` are skipped for those statistics only.
    """
    numbers, energies, forces = [], [], []
    edges = nodes = count = 0
    for g in _iterate(graphs, progress, "statistics"):
        count += 1
        z = g.atomic_numbers.cpu().numpy()
        edges += int(g.edge_index.shape[1])
        nodes += len(z)
        if getattr(g, "energy", None) is not None:
            numbers.append(z)
            energies.append(float(g.energy.reshape(-1)[0]))
        if getattr(g, "forces", None) is not None:
            forces.append(g.forces.detach().cpu().numpy())
    if not energies:
        raise ValueError("no graph carries an energy label; cannot compute energy statistics")
    reference = (
        dict(atomic_energies) if atomic_energies is not None else fit_linear_reference(numbers, energies)
    )
    shift, scale = reference_residuals(numbers, energies, reference)
    return TrainingStatistics(
        atomic_energies=reference,
        energy_shift=shift,
        energy_scale=scale,
        force_rms=force_rms(forces),
        avg_num_neighbors=edges / nodes if nodes else float("nan"),
        n_graphs=count,
    )
