"""The numba neighbour list returns exactly ASE's "ijS" edges."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.io import read
from ase.neighborlist import neighbor_list as ase_neighbor_list
from conftest_data import edge_set, isolated_cache, shared  # noqa: F401

from equitensor.datasets.neighbors import neighbor_list


def assert_same_as_ase(positions, cell, pbc, r_max):
    atoms = Atoms(positions=positions, cell=cell, pbc=pbc)
    expected = edge_set(*ase_neighbor_list("ijS", atoms, r_max))
    i, j, S = neighbor_list(np.asarray(positions, float), np.asarray(cell, float), np.asarray(pbc), r_max)
    assert edge_set(i, j, S) == expected
    # Convention check independent of ASE: every edge vector is shorter than r_max and non-zero.
    D = positions[j] - positions[i] + S @ np.asarray(cell, float)
    lengths = np.linalg.norm(D, axis=1)
    assert np.all(lengths < r_max) and np.all(lengths > 0)
    return len(expected)


def random_cell(rng, skew):
    """A random triclinic cell with perpendicular widths >= 0.7 Å (ASE itself is very slow below)."""
    while True:
        cell = np.diag(rng.uniform(1.0, 6.0, 3))
        cell[1, 0] = rng.uniform(-skew, skew) * cell[0, 0]
        cell[2, :2] = rng.uniform(-skew, skew, 2) * cell[0, 0]
        cell = cell @ np.linalg.qr(rng.normal(size=(3, 3)))[0]  # random orientation
        widths = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
        if widths.min() > 0.7:
            return cell


@pytest.mark.parametrize("skew", [0.0, 0.5, 3.0])
def test_random_triclinic_cells_match_ase(skew):
    rng = np.random.default_rng(int(skew * 10))
    total = 0
    for _ in range(40):
        cell = random_cell(rng, skew)
        pbc = rng.random(3) < 0.75
        n = int(rng.integers(1, 25))
        positions = rng.uniform(-0.5, 1.5, size=(n, 3)) @ cell  # many atoms outside the cell
        total += assert_same_as_ase(positions, cell, pbc, float(rng.uniform(0.5, 4.5)))
    assert total > 500  # the comparison actually saw edges


def test_small_and_strongly_skewed_cell_many_images():
    # Perpendicular widths 0.05, 0.32 and 1 Å: with r_max ~1.9 Å edges reach images up to ~39
    # cells away along the thinnest direction.
    cell = np.array([[1.2, 0.0, 0.0], [5.9, 1.1, 0.0], [-4.0, 3.3, 1.0]])
    positions = np.array([[0.1, 0.2, 0.3], [0.7, 0.4, 0.6], [3.0, 1.0, 0.2]]) + 0.0123
    # r_max is kept off round values: with these decimal inputs some |D| equal e.g. 3.0 up to
    # rounding, and ASE and we may round such a tie differently.
    n_edges = assert_same_as_ase(positions, cell, [True, True, True], 1.913)
    assert n_edges > 150


def test_single_atom_periodic_images_only():
    n_edges = assert_same_as_ase(np.zeros((1, 3)), np.eye(3) * 2.0, [True] * 3, 2.5)
    assert n_edges == 6  # the 6 face images at 2.0 Å; the next shell is at 2.83 Å


def test_molecule_without_cell():
    mol = molecule("CH3CH2OH")
    assert assert_same_as_ase(mol.positions, np.zeros((3, 3)), [False] * 3, 2.0) > 0


def test_slab_partial_pbc_with_zero_vacuum_vector():
    slab = fcc111("Cu", size=(3, 3, 3), vacuum=None, a=3.61)  # cell[2] spans one layer only
    slab.pbc = [True, True, False]
    slab.positions += 50.0  # far outside the cell
    cell = slab.cell.array.copy()
    assert_same_as_ase(slab.positions, cell, slab.pbc, 5.0)
    cell[2] = 0.0  # a zero vector in the non-periodic direction must not matter
    i, j, S = neighbor_list(slab.positions, cell, slab.pbc, 5.0)
    assert edge_set(i, j, S) == edge_set(*ase_neighbor_list("ijS", slab, 5.0))


@pytest.mark.parametrize("pbc", [[True, False, False], [False, True, True], [False, False, True]])
def test_partial_pbc_bulk(pbc):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.1, seed=1)
    assert_same_as_ase(atoms.positions, atoms.cell.array, pbc, 4.0)


def test_real_oc20_frames_match_ase():
    for name in ("random1000100.traj", "random1447590.traj", "random1000163.traj"):
        atoms = read(shared(f"oc20_traj/{name}"), index=-1)
        assert_same_as_ase(atoms.positions, atoms.cell.array, atoms.pbc, 6.0)


def test_output_grouped_by_sender():
    atoms = bulk("Cu", "fcc", a=3.61).repeat((2, 2, 2))
    i, _, _ = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    assert np.all(np.diff(i) >= 0) and len(np.unique(i)) == len(atoms)


def test_capacity_retry_for_dense_clusters():
    # All atoms in one tight clump of a big cell: far more pairs than the mean density predicts,
    # which forces the second (exact-size) pass.
    rng = np.random.default_rng(5)
    positions = rng.normal(0.0, 0.6, size=(60, 3)) + 7.0
    assert assert_same_as_ase(positions, np.eye(3) * 14.0, [True] * 3, 3.0) > 60 * 50


def test_empty_input():
    i, j, S = neighbor_list(np.zeros((0, 3)), np.eye(3), [True] * 3, 3.0)
    assert i.shape == (0,) and j.shape == (0,) and S.shape == (0, 3)


def test_bad_inputs_raise():
    pos = np.zeros((3, 3))
    pos[1] = [1.0, 0.0, 0.0]
    bad = pos.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="atom 2"):
        neighbor_list(bad, np.eye(3) * 5, [True] * 3, 3.0)
    with pytest.raises(ValueError, match="singular"):
        neighbor_list(pos, np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]]), [True] * 3, 3.0)
    with pytest.raises(ValueError, match="singular"):
        neighbor_list(pos, np.zeros((3, 3)), [True, False, False], 3.0)
    for r_max in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="r_max"):
            neighbor_list(pos, np.eye(3) * 5, [True] * 3, r_max)
