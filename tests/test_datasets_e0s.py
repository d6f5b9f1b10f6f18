"""E0s from isolated-atom frames (data.e0s: isolated) and the under-determined least-squares warning."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from equitensor.datasets import write_extxyz
from equitensor.datasets.statistics import fit_linear_reference, isolated_atom_e0s


def test_single_composition_fit_warns():
    numbers = [np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])] * 5  # ethanol only
    with pytest.warns(
        UserWarning, match=r"under-determined: .*1 distinct composition\(s\) for the 3 elements H, C, O"
    ):
        fit_linear_reference(numbers, [-100.0, -100.1, -99.9, -100.2, -100.0])


def test_determined_fit_is_silent_and_exact(recwarn):
    rng = np.random.default_rng(0)
    numbers = [rng.choice([1, 8], size=rng.integers(2, 9)) for _ in range(10)]
    truth = {1: -13.6, 8: -2035.6}
    e0 = fit_linear_reference(numbers, [sum(truth[z] for z in n) for n in numbers])
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    assert e0 == pytest.approx(truth)


def _frame(symbols, energy, positions=None, config_type=None):
    atoms = Atoms(
        symbols,
        positions=positions if positions is not None else np.zeros((len(symbols), 3)),
        cell=[10] * 3,
        pbc=False,
    )
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((len(symbols), 3)))
    if config_type:
        atoms.info["config_type"] = config_type
    return atoms


def test_isolated_e0s_through_the_training_setup(tmp_path):
    from equitensor.train.config import ConfigError, load_config
    from equitensor.train.setup import compute_statistics, prepare_data

    frames = [
        _frame("H", -13.6, config_type="IsolatedAtom"),
        _frame("O", -2035.6, config_type="IsolatedAtom"),
    ]
    water = [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]
    frames += [_frame("OHH", -2080.0 + 0.1 * k, water) for k in range(6)]
    write_extxyz(tmp_path / "water.extxyz", frames, info_keys=("config_type",))
    cfg = load_config(
        None, [f"data.train={tmp_path / 'water.extxyz'}", "data.e0s=isolated", "data.val_fraction=0.34"]
    )
    splits = prepare_data(cfg.data, 3.0, 0)
    assert len(splits.train) + len(splits.val) == 6
    stats = compute_statistics(splits.train, cfg.data)
    assert stats.atomic_energies == {1: -13.6, 8: -2035.6}
    assert isolated_atom_e0s(splits.train, [1]) == {1: -13.6}
    with pytest.raises(ValueError, match="no isolated-atom energy for Na"):
        isolated_atom_e0s(splits.train, [1, 11])
    write_extxyz(tmp_path / "plain.extxyz", frames[2:])
    cfg = load_config(
        None, [f"data.train={tmp_path / 'plain.extxyz'}", "data.e0s=isolated", "data.val_fraction=0.34"]
    )
    with pytest.raises(ConfigError, match="data.e0s=isolated: .*no isolated-atom energy for H, O"):
        compute_statistics(prepare_data(cfg.data, 3.0, 0).train, cfg.data)
