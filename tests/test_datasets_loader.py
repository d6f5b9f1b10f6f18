"""graph_loader: batches from worker processes equal torch_geometric's; the coincident-atom screen."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from ase import Atoms
from torch_geometric.loader import DataLoader as PygDataLoader

from equitensor.datasets import GraphDataset, open_dataset
from equitensor.datasets.batching import AtomBudgetBatchSampler
from equitensor.datasets.errors import DatasetError
from equitensor.datasets.graph import AtomsToGraph, check_no_coincident_atoms
from equitensor.datasets.loader import PackedBatch, collate_graphs, graph_loader
from equitensor.datasets.neighbors import neighbor_list, shortest_edge_length

from .test_datasets_sources import emt_frames, write_shards


def assert_same_batch(expected, actual):
    assert expected.keys() == actual.keys()
    for key in expected.keys():
        a, b = expected[key], actual[key]
        if torch.is_tensor(a):
            assert a.dtype == b.dtype and torch.equal(a, b), key
        else:
            assert a == b, key
    for table in ("_slice_dict", "_inc_dict"):
        a, b = getattr(expected, table), getattr(actual, table)
        assert a.keys() == b.keys()
        for key in a:
            assert (torch.equal(a[key], b[key]) if torch.is_tensor(a[key]) else a[key] == b[key]), (table, key)
    assert expected.num_graphs == actual.num_graphs
    for k in range(expected.num_graphs):  # get_example needs the slice and increment tables
        assert_same_graph(expected.get_example(k), actual.get_example(k))


def assert_same_graph(a, b):
    assert a.keys() == b.keys()
    for key in a.keys():
        assert torch.equal(a[key], b[key]) if torch.is_tensor(a[key]) else a[key] == b[key], key


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    paths = write_shards(tmp_path_factory.mktemp("loader") / "shards", emt_frames(24), 3)
    return GraphDataset(open_dataset([str(p) for p in paths]), r_max=4.0, dtype=torch.float32)


def test_packed_batch_round_trip_is_the_same_batch(graphs):
    batch = collate_graphs([graphs[k] for k in (0, 5, 7, 3)])
    restored = pickle.loads(pickle.dumps(PackedBatch(batch)))
    assert_same_batch(batch, restored)
    storages = {t.untyped_storage().data_ptr() for _, t in restored if torch.is_tensor(t) and t.numel()}
    assert len(storages) == 1  # one buffer for the whole batch


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_batches_equal_torch_geometric_loader(graphs, workers):
    ours = list(graph_loader(graphs, batch_size=5, num_workers=workers))
    reference = list(PygDataLoader(graphs, batch_size=5))
    assert len(ours) == len(reference)
    for expected, actual in zip(reference, ours, strict=True):
        assert_same_batch(expected, actual)


def test_persistent_workers_follow_the_batch_sampler_between_epochs(graphs):
    sampler = AtomBudgetBatchSampler(graphs, 80, seed=1)
    loader = graph_loader(graphs, batch_sampler=sampler, num_workers=2)
    assert loader.persistent_workers
    for epoch in range(2):
        sampler.set_epoch(epoch)
        sampler.set_start(0)
        plan = list(sampler)
        batches = list(loader)
        assert [b.sid.tolist() for b in batches] == [[graphs[i].sid for i in b] for b in plan]
    sampler.set_start(2)  # resume mid-epoch
    assert [b.sid.tolist() for b in loader] == [[graphs[i].sid for i in b] for b in plan[2:]]


def test_custom_collate_is_refused(graphs):
    with pytest.raises(TypeError, match="collates graphs itself"):
        graph_loader(graphs, collate_fn=list)


# ------------------------------------------------------------------ coincident-atom screen
def test_shortest_edge_length_matches_numpy():
    rng = np.random.default_rng(0)
    cell = np.diag([5.0, 6.0, 7.0]) + 0.3 * rng.standard_normal((3, 3))
    pos = rng.random((30, 3)) @ cell
    i, j, shifts = neighbor_list(pos, cell, np.array([True, True, False]), 4.0)
    expected = np.linalg.norm(pos[j] - pos[i] + shifts @ cell, axis=1).min()
    assert shortest_edge_length(pos, cell, i, j, shifts) == pytest.approx(expected, rel=1e-12)
    empty = np.zeros(0, dtype=np.int64)
    assert shortest_edge_length(pos, cell, empty, empty, np.zeros((0, 3), dtype=np.int64)) == np.inf


@pytest.mark.parametrize(
    ("gap", "raises"), [(0.0, True), (0.4e-3, True), (0.999e-3, True), (1.001e-3, False), (1.9e-3, False)]
)
def test_close_pairs_at_the_threshold(gap, raises):
    atoms = Atoms("Cu3", positions=[[0, 0, 0], [2.0, 0, 0], [2.0 + gap, 0, 0]], cell=np.eye(3) * 6, pbc=True)
    if raises:
        with pytest.raises(DatasetError, match="atoms 1 .* and 2 .* same position"):
            AtomsToGraph(3.0)(atoms)
    else:
        AtomsToGraph(3.0)(atoms)


def test_the_first_repeated_atom_is_named_when_two_pairs_coincide():
    # atoms 0 and 2 coincide, and 1 and 3: the first repeat is atom 2, a copy of atom 0
    positions = [[0, 0, 0], [1.5, 0, 0], [0, 0, 0], [1.5, 0, 0], [0, 2.0, 0]]
    atoms = Atoms("CuAuNiPtAg", positions=positions)
    i, j, shifts = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 3.0)
    with pytest.raises(DatasetError, match=r"atoms 0 \(Cu\) and 2 \(Ni\) are at the same position"):
        check_no_coincident_atoms(atoms, i, j, shifts)


def test_negative_zero_is_the_same_position():
    atoms = Atoms("Cu2", positions=[[0.0, 0.0, 0.0], [-0.0, 0.0, -0.0]])
    with pytest.raises(DatasetError, match=r"atoms 0 \(Cu\) and 1 \(Cu\) are at the same position"):
        AtomsToGraph(3.0)(atoms)


# ------------------------------------------------------------------ memory proxy of benchmarks/batch_memory.py
def test_live_tensor_bytes_tracks_allocations_views_and_frees():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.batch_memory import LiveTensorBytes

    tracker = LiveTensorBytes()
    with tracker:
        a = torch.empty(1000, dtype=torch.float32)  # 4,000 bytes
        b = torch.empty(2000, dtype=torch.float64)  # 16,000 bytes
        view = b[:10]  # no new memory
        del a
        c = torch.empty(500, dtype=torch.float32)  # 2,000 bytes, after a was freed
        del b
    assert tracker.peak == 20_000
    assert tracker.live == 18_000  # b's storage lives on through the view
    del view
    assert tracker.live == 2_000
    del c
    assert tracker.live == 0
