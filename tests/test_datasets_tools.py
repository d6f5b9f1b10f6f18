"""Demo generator, statistics helpers, conversion and the data CLI."""

import argparse
import hashlib

import numpy as np
import pytest
import torch
from conftest_data import isolated_cache, shared  # noqa: F401

from equitensor.datasets import GraphDataset, S2EFReader, frame_labels, open_dataset
from equitensor.datasets.cli import add_data_commands, main
from equitensor.datasets.convert import convert
from equitensor.datasets.demo import demo_dataset_path, make_demo_dataset
from equitensor.datasets.statistics import (
    avg_num_neighbors,
    e0s_from_single_atoms,
    fit_linear_reference,
    force_rms,
    reference_residuals,
)


def folder_digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_demo_is_deterministic_and_readable(tmp_path):
    a = make_demo_dataset(tmp_path / "a", n_frames=40, seed=3)
    b = make_demo_dataset(tmp_path / "b", n_frames=40, seed=3)
    assert folder_digest(a) == folder_digest(b)
    assert folder_digest(make_demo_dataset(tmp_path / "c", n_frames=40, seed=4)) != folder_digest(a)

    train, val = S2EFReader(a / "train", referenced=True), S2EFReader(a / "val", referenced=True)
    assert len(train) + len(val) == 40 and len(train) > 0
    atoms = train[0]
    tags = atoms.get_tags()
    assert set(tags.tolist()) == {0, 1, 2} and atoms.info["energy_referenced"]
    forces = frame_labels(atoms)["forces"]
    assert np.abs(forces[tags == 0]).max() > 1e-4  # raw forces on the fixed layer are kept
    # Referenced energies are adsorption-like energies (a few eV), totals are not.
    total = frame_labels(S2EFReader(a / "train")[0])["energy"]
    assert frame_labels(atoms)["energy"] == pytest.approx(total - atoms.info["reference_energy"])
    graph = GraphDataset(train, r_max=5.0)[1]
    assert graph.edge_index.shape[1] > 0 and graph.energy.shape == (1,)


def test_demo_reuses_matching_manifest(tmp_path, monkeypatch):
    path = demo_dataset_path(n_frames=12, seed=0, create=True)
    stamp = (path / "manifest.json").stat().st_mtime_ns
    from equitensor.datasets import demo

    monkeypatch.setattr(demo, "_system_frames", lambda *a: pytest.fail("regenerated an existing dataset"))
    assert demo_dataset_path(n_frames=12, seed=0, create=True) == path
    assert (path / "manifest.json").stat().st_mtime_ns == stamp


def test_linear_reference_recovers_known_energies():
    rng = np.random.default_rng(0)
    true = {1: -3.4, 8: -7.1, 29: -3.9}
    numbers = [rng.choice([1, 8, 29], size=rng.integers(3, 12)) for _ in range(40)]
    energies = [sum(true[z] for z in nums) + 0.01 * rng.normal() for nums in numbers]
    fitted = fit_linear_reference(numbers, energies)
    assert fitted == pytest.approx(true, abs=0.02)
    mean, std = reference_residuals(numbers, energies, fitted)
    assert abs(mean) < 5e-3 and 0 < std < 0.01


def test_e0s_force_rms_and_neighbors():
    e0s = e0s_from_single_atoms(open_dataset(shared("molecules/3bpa/iso_atoms.xyz"), require=()))
    assert set(e0s) == {1, 6, 7, 8} and all(e < 0 for e in e0s.values())
    assert force_rms([np.full((2, 3), 2.0), np.full((1, 3), -2.0)]) == pytest.approx(2.0)
    reader = open_dataset(shared("molecules/ethanol/train.xyz"))
    graphs = [GraphDataset(reader, r_max=100.0)[i] for i in range(3)]
    assert avg_num_neighbors(graphs) == pytest.approx(8.0)  # everyone sees everyone in ethanol


def test_convert_any_to_each_format(tmp_path):
    src = shared("oc20_traj/random1447590.traj")
    reader = open_dataset(src)
    for dst, kwargs in [("s2ef", {}), ("one.extxyz.xz", {}), ("db.aselmdb", {}), ("db.lmdb", {})]:
        n = convert(src, tmp_path / dst, frames_per_file=20, **kwargs)
        assert n == len(reader)
        back = (
            open_dataset(tmp_path / dst, allow_pickle=True)
            if dst.endswith(".lmdb")
            else open_dataset(tmp_path / dst)
        )
        assert len(back) == len(reader)
        np.testing.assert_allclose(
            frame_labels(back[-1])["forces"], frame_labels(reader[-1])["forces"], atol=1e-6
        )
        np.testing.assert_array_equal(back[-1].get_tags(), reader[-1].get_tags())
    with pytest.raises(ValueError, match="already exists"):
        convert(src, tmp_path / "db.aselmdb")


def test_cli_info_convert_make_demo(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "info", str(shared("fairchem/toy_c3h8_relax.extxyz")), "--no-progress"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "frames: 101" in out and "elements (atom counts): H:" in out and "forces (eV/A" in out

    assert (
        main(
            [
                "data",
                "convert",
                str(shared("fairchem/toy_c3h8_relax.extxyz")),
                str(tmp_path / "toy"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(S2EFReader(tmp_path / "toy")) == 101
    assert main(["data", "make-demo", "--out", str(tmp_path / "demo"), "--frames", "10"]) == 0
    assert (tmp_path / "demo" / "manifest.json").exists()
    assert main(["data", "info", str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_graph_dtype_option():
    reader = open_dataset(shared("oc20_traj/random1447590.traj"))
    g32, g64 = GraphDataset(reader, 5.0, dtype=torch.float32)[0], GraphDataset(reader, 5.0)[0]
    assert g32.pos.dtype == torch.float32 and g64.pos.dtype == torch.float64
    assert torch.equal(g32.edge_index, g64.edge_index)


def test_xz_is_decompressed_and_indexed_once(tmp_path, monkeypatch):
    from equitensor.datasets import extxyz
    from equitensor.datasets.cache import cache_root

    src = open_dataset(shared("fairchem/toy_c3h8_relax.extxyz"))
    from equitensor.datasets.extxyz import write_extxyz

    write_extxyz(tmp_path / "toy.extxyz.xz", (src[i] for i in range(10)))
    first = open_dataset(tmp_path / "toy.extxyz.xz")
    assert len(first) == 10
    assert len(list((cache_root() / "xz").iterdir())) >= 1
    monkeypatch.setattr(extxyz, "index_extxyz", lambda path: pytest.fail("re-indexed a cached file"))
    again = open_dataset(tmp_path / "toy.extxyz.xz")
    np.testing.assert_array_equal(again[7].positions, src[7].positions)
    np.testing.assert_array_equal(frame_labels(again[7])["forces"], frame_labels(src[7])["forces"])


def test_training_statistics_on_ethanol():
    from equitensor.datasets.statistics import training_statistics

    reader = open_dataset(shared("molecules/ethanol/train.xyz"))
    e0s = open_dataset(shared("molecules/ethanol/isolated_atoms.xyz"), require=()).isolated_atom_energies
    graphs = [GraphDataset(reader, r_max=5.0)[i] for i in range(0, 1000, 50)]
    stats = training_statistics(graphs, atomic_energies=e0s)
    assert stats.n_graphs == 20 and stats.atomic_energies == e0s
    assert stats.avg_num_neighbors == pytest.approx(8.0)  # ethanol fits inside 5 Å
    energies = np.array([g.energy.item() for g in graphs])
    e0_total = 2 * e0s[6] + 6 * e0s[1] + e0s[8]
    assert stats.energy_shift == pytest.approx(np.mean((energies - e0_total) / 9))
    assert stats.force_rms == pytest.approx(
        float(np.sqrt(np.mean([(g.forces**2).mean().item() for g in graphs])))
    )
    fitted = training_statistics(graphs)
    assert abs(fitted.energy_shift) < 1e-6  # a least-squares reference leaves a zero-mean residual
