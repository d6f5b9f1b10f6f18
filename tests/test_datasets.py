"""Readers, writers and graph conversion on real OC20/OC22/molecule data."""

import pickle

import numpy as np
import pytest
import torch
from ase.io import read
from conftest_data import isolated_cache, shared  # noqa: F401
from torch_geometric.loader import DataLoader

from equitensor.datasets import (
    AseDBReader,
    AtomsToGraph,
    DatasetError,
    ExtXYZReader,
    GraphDataset,
    PyGLmdbReader,
    S2EFReader,
    TrajectoryReader,
    fixed_mask,
    frame_labels,
    free_atom_mask,
    open_dataset,
    write_ase_db,
    write_pyg_lmdb,
    write_s2ef,
)

OC20_FILES = ("random1000100.traj", "random1447590.traj", "random1000163.traj")


def oc20_frames():
    """A few frames of three real OC20 trajectories (raw labels, rebuilt tags), with sid/fid."""
    frames = []
    for sid, name in enumerate(OC20_FILES):
        reader = TrajectoryReader(shared(f"oc20_traj/{name}"))
        for fid in (0, len(reader) // 2, len(reader) - 1):
            atoms = reader[fid]
            atoms.info.update(sid=sid, fid=fid, reference_energy=-1.5 * sid)
            frames.append(atoms)
    return frames


def assert_same_frames(got, expected, atol=0.0):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=atol)
        np.testing.assert_allclose(a.cell.array, b.cell.array, rtol=0, atol=atol)
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_array_equal(a.pbc, b.pbc)
        la, lb = frame_labels(a), frame_labels(b)
        assert la["energy"] == pytest.approx(lb["energy"], abs=max(atol, 1e-12) * 100)
        np.testing.assert_allclose(la["forces"], lb["forces"], rtol=0, atol=atol)
        np.testing.assert_array_equal(a.get_tags(), b.get_tags())
        np.testing.assert_array_equal(fixed_mask(a), fixed_mask(b))
        assert (a.info.get("sid"), a.info.get("fid")) == (b.info.get("sid"), b.info.get("fid"))


def test_traj_reader_keeps_raw_forces_on_fixed_atoms():
    reader = TrajectoryReader(shared("oc20_traj/random1000100.traj"))
    atoms = reader[0]
    fixed = fixed_mask(atoms)
    forces = frame_labels(atoms)["forces"]
    assert fixed.sum() == 17
    assert np.abs(forces[fixed]).max() > 0.1  # raw DFT forces, not zeroed by FixAtoms
    np.testing.assert_array_equal(forces, read(reader.path, 0).get_forces(apply_constraint=False))
    # Tags rebuilt by the OC20 rule: fixed -> 0, trailing O adsorbate -> 2, the rest 1.
    tags = atoms.get_tags()
    assert (tags[fixed] == 0).all() and tags[-1] == 2 and (tags[~fixed][:-1] == 1).all()


def test_oc20_round_trip_s2ef_aselmdb_pyg_lmdb(tmp_path):
    frames = oc20_frames()
    write_s2ef(frames, tmp_path / "s2ef", frames_per_file=4, compress=True)
    assert sorted(p.name for p in (tmp_path / "s2ef").iterdir())[:2] == ["0.extxyz.xz", "0.txt.xz"]
    s2ef = S2EFReader(tmp_path / "s2ef")
    assert_same_frames(list(s2ef), frames)
    assert [a.info["reference_energy"] for a in s2ef] == [a.info["reference_energy"] for a in frames]
    referenced = S2EFReader(tmp_path / "s2ef", referenced=True)
    expected = [frame_labels(a)["energy"] - a.info["reference_energy"] for a in frames]
    assert [frame_labels(a)["energy"] for a in referenced] == pytest.approx(expected, abs=1e-12)

    write_ase_db(tmp_path / "oc20.aselmdb", frames)
    assert_same_frames(list(AseDBReader(tmp_path / "oc20.aselmdb")), frames)

    write_pyg_lmdb(tmp_path / "oc20.lmdb", frames, dtype=torch.float64)
    assert_same_frames(list(PyGLmdbReader(tmp_path / "oc20.lmdb", allow_pickle=True)), frames)
    write_pyg_lmdb(tmp_path / "oc20_f32.lmdb", frames)  # fairchem's float32 layout
    assert_same_frames(list(open_dataset(tmp_path / "oc20_f32.lmdb", allow_pickle=True)), frames, atol=1e-4)


def test_oc22_pickle_sample_decodes_through_lmdb(tmp_path):
    import lmdb

    with open(shared("fairchem/oc22_pickle16_train.pkl"), "rb") as fh:
        samples = pickle.load(fh)
    path = tmp_path / "oc22.lmdb"
    env = lmdb.open(str(path), subdir=False, map_size=1 << 30)
    with env.begin(write=True) as txn:
        for k, data in enumerate(samples):
            txn.put(str(k).encode(), pickle.dumps(data))
        txn.put(b"length", pickle.dumps(len(samples)))
    env.close()

    with pytest.raises(DatasetError, match="allow_pickle=True"):
        open_dataset(path)
    reader = open_dataset(path, allow_pickle=True)
    assert isinstance(reader, PyGLmdbReader) and len(reader) == 16
    graphs = GraphDataset(reader, r_max=6.0)
    for k in (0, 15):
        g, src = graphs[k], samples[k]
        assert torch.equal(g.pos, src.pos.double())
        assert torch.equal(g.forces, src.force.double())
        assert g.energy.item() == src.y
        assert torch.equal(g.atomic_numbers, src.atomic_numbers.long())
        assert torch.equal(g.tags, src.tags) and torch.equal(g.fixed, src.fixed.bool())
        assert (g.sid, g.fid) == (src.sid, src.fid)
        assert g.edge_index.shape[1] > 0


def test_legacy_pyg1_layout_decodes(tmp_path):
    import copyreg

    import lmdb
    from torch_geometric.data import Data

    class LegacyData:
        """Pickles like a PyG<2 Data: attributes directly in __dict__, no _store."""

        def __init__(self, **state):
            self.state = state

        def __reduce__(self):
            return copyreg._reconstructor, (Data, object, None), self.state

    state = dict(
        pos=torch.rand(3, 3) * 3,
        cell=torch.eye(3).view(1, 3, 3) * 8,
        atomic_numbers=torch.tensor([29.0, 29, 8]),
        natoms=3,
        y=-3.25,
        force=torch.rand(3, 3),
        tags=torch.tensor([1, 1, 2]),
        fixed=torch.zeros(3),
        sid=7,
        fid=2,
        edge_index=None,
    )
    path = tmp_path / "legacy.lmdb"
    env = lmdb.open(str(path), subdir=False, map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"0", pickle.dumps(LegacyData(**state)))  # no "length" key: count from entries
    env.close()
    atoms = PyGLmdbReader(path, allow_pickle=True)[0]
    np.testing.assert_allclose(atoms.positions, state["pos"].numpy().astype(np.float64))
    assert frame_labels(atoms)["energy"] == -3.25 and atoms.info["sid"] == 7


def test_graph_contract_and_batching():
    reader = open_dataset(shared("oc20_traj/random1000100.traj"))
    dataset = GraphDataset(reader, r_max=5.0, dtype=torch.float32)
    g = dataset[3]
    n = g.num_nodes
    assert g.pos.dtype == torch.float32 and g.pos.shape == (n, 3)
    assert g.cell.shape == (1, 3, 3) and g.pbc.shape == (1, 3) and g.pbc.dtype == torch.bool
    assert g.edge_index.dtype == torch.long and g.cell_offsets.shape == (g.edge_index.shape[1], 3)
    assert g.energy.shape == (1,) and g.forces.shape == (n, 3) and g.natoms.tolist() == [n]
    assert g.tags.dtype == torch.long and g.fixed.dtype == torch.bool
    # Edge vectors follow pos[j] - pos[i] + S @ cell and lie inside the cutoff.
    src, dst = g.edge_index
    vec = g.pos[dst] - g.pos[src] + g.cell_offsets @ g.cell[0]
    assert vec.norm(dim=1).max() < 5.0 and vec.norm(dim=1).min() > 0.5
    assert (free_atom_mask(g) == ~g.fixed).all() and (~free_atom_mask(g)).sum() == 17

    batch = next(iter(DataLoader([dataset[0], dataset[1]], batch_size=2)))
    assert batch.edge_index.max() >= n and batch.ptr.tolist() == [0, n, 2 * n]
    assert batch.energy.shape == (2,) and batch.cell.shape == (2, 3, 3)


def test_molecule_graph_has_zero_cell():
    g = AtomsToGraph(4.0)(ExtXYZReader(shared("molecules/ethanol/train.xyz"))[0])
    assert torch.count_nonzero(g.cell) == 0 and not g.pbc.any() and (g.tags == 0).all()
    assert (g.cell_offsets == 0).all() and g.edge_index.shape[1] == 9 * 8  # every pair within 4 Å


def test_extxyz_keys_and_isolated_atoms(tmp_path):
    reader = ExtXYZReader(shared("molecules/ethanol/isolated_atoms.xyz"), require=())
    assert len(reader) == 0 and set(reader.isolated_atom_energies) == {1, 6, 7, 8}
    ethanol = ExtXYZReader(shared("molecules/ethanol/train.xyz"))
    assert len(ethanol) == 1000 and ethanol.isolated_atom_energies == {}

    text = shared("molecules/ethanol/train.xyz").read_text().split("\n")
    frame = "\n".join(text[:11]).replace("energy=", "REF_energy=").replace(":forces:", ":REF_forces:")
    iso = '1\nProperties=species:S:1:pos:R:3 config_type=IsolatedAtom REF_energy=-13.5 pbc="F F F"\nH 0 0 0\n'
    (tmp_path / "mace.xyz").write_text(frame + "\n" + iso)
    with pytest.raises(DatasetError, match="'energy' is missing"):
        ExtXYZReader(tmp_path / "mace.xyz")[0]
    mace = ExtXYZReader(tmp_path / "mace.xyz", energy_key="REF_energy", forces_key="REF_forces")
    assert len(mace) == 1 and mace.isolated_atom_energies == {1: -13.5}
    np.testing.assert_allclose(frame_labels(mace[0])["forces"], frame_labels(ethanol[0])["forces"])
    assert frame_labels(mace[0])["energy"] == frame_labels(ethanol[0])["energy"]


def test_fairchem_examples():
    toy = open_dataset(shared("fairchem/toy_c3h8_relax.extxyz"))
    assert len(toy) == 101 and (toy[0].get_tags() == 2).sum() == 11  # C3H8 adsorbate
    assert fixed_mask(toy[0]).sum() == 18  # from move_mask
    single = open_dataset(shared("fairchem/oc20_single_frame_atoms.json"))
    atoms = single[0]
    assert len(atoms) == 34 and fixed_mask(atoms).sum() == 24
    assert frame_labels(atoms)["energy"] == pytest.approx(-135.66393572)


def test_open_dataset_rejects_unknown_format(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("x\n")
    with pytest.raises(ValueError, match=r"data\.csv.*accepted.*extxyz"):
        open_dataset(path)


def test_readers_work_in_dataloader_workers(tmp_path):
    frames = oc20_frames()[:4]
    write_pyg_lmdb(tmp_path / "w.lmdb", frames)
    write_ase_db(tmp_path / "w.aselmdb", frames)
    for path in ("w.lmdb", "w.aselmdb"):  # the readers that hold open handles
        reader = (
            open_dataset(tmp_path / path, allow_pickle=True)
            if path.endswith(".lmdb")
            else open_dataset(tmp_path / path)
        )
        reader[0]  # open handles in the parent first: workers must not reuse them
        loader = DataLoader(
            GraphDataset(reader, r_max=5.0), batch_size=2, num_workers=2, multiprocessing_context="fork"
        )
        energies = torch.cat([b.energy for b in loader])
        expected = torch.tensor([frame_labels(a)["energy"] for a in frames], dtype=energies.dtype)
        torch.testing.assert_close(energies, expected)
