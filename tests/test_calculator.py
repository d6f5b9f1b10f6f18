"""ASE calculator: properties on a molecule and a periodic slab, a short relaxation and MD."""

import numpy as np
import pytest
import torch
from ase import units
from ase.build import fcc111, molecule
from ase.constraints import FixAtoms
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from ase.stress import full_3x3_to_voigt_6_stress
from torch_geometric.data import Batch

from equitensor._dtype import default_dtype
from equitensor.models import EquitensorCalculator, atoms_to_graph, save_model

from .test_models import single_thread, small_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("default_float64")


@pytest.fixture(scope="module")
def model():
    with default_dtype(torch.float64):
        return small_model()


def slab():
    a = fcc111("Cu", size=(2, 2, 2), vacuum=4.0)
    a.set_constraint(FixAtoms(indices=[atom.index for atom in a if atom.tag > 1]))
    a.rattle(0.02, seed=4)
    return a


def test_properties_match_the_model(model):
    atoms = slab()
    atoms.calc = EquitensorCalculator(model)
    energy = atoms.get_potential_energy()
    out = model(Batch.from_data_list([atoms_to_graph(atoms, model.r_max)]), compute_stress=True)
    assert energy == pytest.approx(out["energy"].item(), abs=1e-12)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(energy)
    assert np.allclose(atoms.get_forces(apply_constraint=False), out["forces"].numpy(), atol=1e-12)
    assert np.allclose(atoms.get_stress(), full_3x3_to_voigt_6_stress(out["stress"][0].numpy()), atol=1e-12)
    assert atoms.get_potential_energies().sum() == pytest.approx(energy, abs=1e-9)


def test_molecule_has_no_stress_and_loads_from_file(model, tmp_path):
    path = tmp_path / "m.pt"
    save_model(model, path)
    atoms = molecule("CH3CH2OH")
    atoms.calc = EquitensorCalculator(str(path), default_dtype="float32")
    energy = atoms.get_potential_energy()
    atoms.calc = EquitensorCalculator(model)
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-3)
    assert "stress" not in atoms.calc.results


def test_relaxation_lowers_the_energy(model):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.1, seed=5)
    atoms.calc = EquitensorCalculator(model)
    start = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=1e-3, steps=5)
    assert atoms.get_potential_energy() < start


def test_md_conserves_energy_for_a_few_steps(model):
    atoms = slab()
    atoms.calc = EquitensorCalculator(model)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    total = [atoms.get_total_energy()]
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs, logfile=None)
    for _ in range(5):
        dyn.run(1)
        total.append(atoms.get_total_energy())
    assert np.ptp(total) < 1e-2 * max(1.0, abs(atoms.get_kinetic_energy()))


def test_bad_dtype(model):
    with pytest.raises(ValueError, match="default_dtype"):
        EquitensorCalculator(model, default_dtype="float16")
