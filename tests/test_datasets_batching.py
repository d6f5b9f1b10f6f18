"""Size-aware batching: atom and edge bounds, edge counts, rank balance, determinism, exact resume,
clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from equitensor.datasets import AtomsToGraph, GraphDataset, open_dataset
from equitensor.datasets.batching import AtomBudgetBatchSampler, BudgetBatchSampler, atom_counts, edge_counts
from equitensor.datasets.loader import graph_loader

from .conftest_data import shared
from .test_datasets_sources import emt_frames, write_shards


def oc20_like_counts(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 231, size=n)


def test_every_system_once_under_the_bound_and_deterministic():
    counts = oc20_like_counts(500)
    sampler = AtomBudgetBatchSampler(range(500), 1000, counts=counts, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(counts[b].sum() <= 1000 for b in batches)
    again = AtomBudgetBatchSampler(range(500), 1000, counts=counts, seed=3)
    assert list(again) == batches
    again.set_epoch(1)
    assert list(again) != batches
    # batches are full: all but the last hold more than the bound minus the largest system
    assert all(counts[b].sum() > 1000 - 230 for b in batches[:-1])


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_balanced_by_atoms(world):
    counts = oc20_like_counts(2000, seed=world)
    samplers = [
        AtomBudgetBatchSampler(range(2000), 2000, world, r, seed=0, counts=counts) for r in range(world)
    ]
    plans = [list(s) for s in samplers]
    assert len({len(p) for p in plans}) == 1  # same number of steps on every rank
    seen = sorted(i for p in plans for b in p for i in b)
    assert seen == list(range(2000))  # disjoint and complete (no padding needed here)
    loads = np.array([[counts[b].sum() for b in p] for p in plans])  # [rank, step]
    full = loads[:, :-1]
    spread = full.max(axis=0) / full.min(axis=0)
    assert spread.max() < 1.10, f"rank atom counts differ by up to {spread.max():.3f}x"
    step_totals = full.max(axis=0)
    assert step_totals.max() / step_totals.min() < 1.5  # peak atoms per batch varies < 1.5x


def test_oc20_trajectory_sizes_are_packed_and_balanced():
    reader = open_dataset(shared("oc20_traj"))
    counts = atom_counts(reader)
    assert counts.max() > counts.min()
    samplers = [AtomBudgetBatchSampler(reader, 1500, 2, r, counts=counts) for r in range(2)]
    loads = np.array([[counts[b].sum() for b in s] for s in samplers])[:, :-1]
    assert loads.max() <= 1500 and (loads.max(axis=0) / loads.min(axis=0)).max() < 1.10


def test_resume_mid_epoch_yields_the_rest():
    counts = oc20_like_counts(300)
    sampler = AtomBudgetBatchSampler(range(300), 800, 2, 1, seed=5, counts=counts)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_start(7)
    assert list(sampler) == full[7:] and len(sampler) == len(full) - 7


def test_last_group_is_padded_so_every_rank_steps():
    counts = np.array([10, 10, 10, 200, 10])
    plans = [list(AtomBudgetBatchSampler(range(5), 205, 2, r, counts=counts, seed=1)) for r in range(2)]
    assert len(plans[0]) == len(plans[1]) and all(b for p in plans for b in p)


def test_system_larger_than_the_bound_is_named(tmp_path):
    frames = emt_frames(8)
    write_shards(tmp_path / "shards", frames, 2)
    dataset = GraphDataset(open_dataset(tmp_path / "shards"), r_max=4.0)
    with pytest.raises(
        ValueError,
        match=r"max_atoms_per_batch=20 is smaller than the system at .*shard0\.aselmdb, frame 3 \(32 atoms\)",
    ):
        AtomBudgetBatchSampler(dataset, 20)
    with pytest.raises(ValueError, match="cannot be split over 4 processes"):
        AtomBudgetBatchSampler(range(3), 100, 4, counts=[1, 1, 1])
    np.testing.assert_array_equal(atom_counts(torch.utils.data.Subset(dataset, [3, 0])), [32, 4])


def _graphs(n: int):
    convert = AtomsToGraph(4.0)
    return [convert(f) for f in emt_frames(n, seed=2)]


def test_trainer_with_atom_budget_resumes_exactly(tmp_path):
    from equitensor.train.trainer import Trainer, seed_everything

    from .test_train_loop import make_config, run
    from .train_helpers import Crash, crash_at_step
    from .train_helpers import PairPotential, save_state_dict

    graphs = _graphs(16)
    settings = ("train.epochs=3", "train.checkpoint_every_steps=2", "train.max_atoms_per_batch=40")
    full, _ = run(make_config(tmp_path / "full", *settings), graphs)
    config = make_config(tmp_path / "part", *settings)
    seed_everything(config.train.seed)
    trainer = Trainer(config, PairPotential(), graphs[:12], graphs[12:], save_best=save_state_dict)
    sizes = [int(g.natoms.sum()) for g in trainer.train_loader]
    assert max(sizes) <= 40 and sum(sizes) == sum(int(g.natoms) for g in graphs[:12])
    crash_at_step(trainer, 4)
    with pytest.raises(Crash):
        trainer.fit()
    resumed, _ = run(config, graphs, resume=tmp_path / "part")
    assert resumed.step_losses == full.step_losses and len(full.step_losses) > 9


def test_trainer_with_worker_processes_trains_as_without(tmp_path):
    from .test_train_loop import make_config, run

    graphs = _graphs(16)
    settings = ("train.epochs=2", "train.max_atoms_per_batch=40")
    alone, _ = run(make_config(tmp_path / "w0", *settings, "data.num_workers=0"), graphs)
    workers, _ = run(make_config(tmp_path / "w2", *settings, "data.num_workers=2"), graphs)
    assert workers.step_losses == alone.step_losses and len(alone.step_losses) > 4


# ------------------------------------------------------------------ edge bound (train.max_edges_per_batch)
OC20_R_MAX = 6.0  # the OC20 preset's cut-off


@pytest.fixture(scope="module")
def oc20_graphs():
    """Every 5th frame of the OC20 trajectories (831 frames, 158-8,470 edges at 6 Å) as graphs."""
    reader = open_dataset(shared("oc20_traj"))
    graphs = GraphDataset(reader, r_max=OC20_R_MAX)
    return torch.utils.data.Subset(graphs, list(range(0, len(reader), 5)))


@pytest.fixture(scope="module")
def oc20_edges(oc20_graphs):
    return edge_counts(oc20_graphs)


def test_edge_counts_equal_the_loaders_graphs_on_oc20(oc20_graphs, oc20_edges):
    sample = torch.utils.data.Subset(oc20_graphs, list(range(0, len(oc20_graphs), 4)))
    built = [int(batch.edge_index.shape[1]) for batch in graph_loader(sample, batch_size=1)]
    np.testing.assert_array_equal(edge_counts(sample), built)
    np.testing.assert_array_equal(oc20_edges[::4], built)
    assert len(set(built)) > 50  # slabs and adsorbates of many densities
    # frames of a bare reader, counted at the cut-off given
    frames = torch.utils.data.Subset(oc20_graphs.dataset.reader, oc20_graphs.indices[::4])
    np.testing.assert_array_equal(edge_counts(frames, OC20_R_MAX), built)


def test_edge_counts_use_cached_graphs_and_check_the_cutoff(tmp_path):
    from equitensor.train.setup import CachedGraphs

    dataset = GraphDataset(open_dataset(write_shards(tmp_path / "shards", emt_frames(8), 2)[0]), r_max=4.0)
    built = [int(dataset[i].edge_index.shape[1]) for i in range(len(dataset))]
    cache = CachedGraphs(dataset)
    cache[1], cache[2]  # two graphs built and held
    cache.graphs[2].edge_index = cache.graphs[2].edge_index[:, :5]  # so a count from the cache shows
    expected = built.copy()
    expected[2] = 5
    subset = torch.utils.data.Subset(cache, [2, 0, 1])
    np.testing.assert_array_equal(edge_counts(subset), [5, built[0], built[1]])
    np.testing.assert_array_equal(edge_counts(cache), expected)
    assert cache.graphs[0] is None  # counting does not build (and hold) graphs
    with pytest.raises(ValueError, match=r"r_max=5\.0\) of graphs built with r_max=4\.0"):
        edge_counts(dataset, 5.0)
    with pytest.raises(ValueError, match="needs r_max"):
        edge_counts(dataset.reader)
    np.testing.assert_array_equal(edge_counts(_graphs(6)), [int(g.edge_index.shape[1]) for g in _graphs(6)])


def oc20_like_sizes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Atoms (20-230) and edges at densities of 10-60 neighbours per atom (vacuum vs bulk)."""
    rng = np.random.default_rng(seed)
    atoms = rng.integers(20, 231, size=n)
    return atoms, atoms * rng.integers(10, 61, size=n)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_no_batch_exceeds_either_bound(world):
    atoms, edges = oc20_like_sizes(1500, seed=world)
    max_atoms, max_edges = 1800, 40_000
    plans = [
        list(BudgetBatchSampler(range(1500), max_atoms, world, r, counts=atoms, max_edges=max_edges, edges=edges))
        for r in range(world)
    ]
    assert len({len(p) for p in plans}) == 1
    batches = [b for p in plans for b in p]
    assert max(atoms[b].sum() for b in batches) <= max_atoms
    assert max(edges[b].sum() for b in batches) <= max_edges
    assert set(i for b in batches for i in b) == set(range(1500))
    # both bounds bind: some batches are stopped by the atoms, others by the edges
    assert max(atoms[b].sum() for b in batches) > max_atoms - 230
    assert max(edges[b].sum() for b in batches) > max_edges - 2000
    # edges alone: every batch but the last is filled up to the edge bound
    alone = list(BudgetBatchSampler(range(1500), max_edges=max_edges, edges=edges))
    assert all(max_edges - edges.max() < edges[b].sum() <= max_edges for b in alone[:-1])
    assert sorted(i for b in alone for i in b) == list(range(1500))


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_balanced_by_edges_on_oc20(oc20_graphs, oc20_edges, world):
    max_edges = 16 * int(oc20_edges.mean())
    samplers = [
        BudgetBatchSampler(oc20_graphs, max_edges=max_edges, num_replicas=world, rank=r, edges=oc20_edges)
        for r in range(world)
    ]
    loads = np.array([[oc20_edges[b].sum() for b in s] for s in samplers])  # [rank, step]
    assert loads.max() <= max_edges
    full = loads[:, :-1]
    assert full.shape[1] >= 5
    spread = full.max(axis=0) / full.min(axis=0)
    assert spread.max() < 1.10, f"rank edge counts differ by up to {spread.max():.3f}x"


def test_edge_bound_is_deterministic_and_resumes_exactly():
    atoms, edges = oc20_like_sizes(400)
    def make():
        return BudgetBatchSampler(range(400), 3000, 2, 1, seed=5, counts=atoms, max_edges=60_000, edges=edges)

    sampler = make()
    sampler.set_epoch(3)
    full = list(sampler)
    again = make()
    again.set_epoch(3)
    assert list(again) == full
    again.set_epoch(4)
    assert list(again) != full
    sampler.set_start(5)
    assert list(sampler) == full[5:] and len(sampler) == len(full) - 5
    # a final group that leaves a rank empty gets the system with the fewest edges
    tiny = [
        list(BudgetBatchSampler(range(3), 100, 2, r, shuffle=False, counts=[10, 5, 10], max_edges=1000,
                                edges=[900, 950, 600]))
        for r in range(2)
    ]  # (item 1 has the fewest atoms, item 2 the fewest edges)  # fmt: skip
    assert tiny == [[[0], [2]], [[1], [2]]]


def test_atom_only_plan_is_unchanged():
    """The atom bound alone plans as the sampler did before edge bounds (reference: a plain
    re-implementation of its rule: least-loaded rank if the system fits, else pass it over)."""
    counts = oc20_like_counts(600, seed=9)
    order = torch.randperm(600, generator=torch.Generator().manual_seed(4 + 1)).tolist()
    groups, pending = [], list(order)
    while pending:
        members, loads, passed, rest = [[], [], []], [0, 0, 0], [], []
        for k, index in enumerate(pending):
            if len(passed) == 32:
                rest = pending[k:]
                break
            rank = loads.index(min(loads))
            if loads[rank] + counts[index] <= 1200:
                members[rank].append(index)
                loads[rank] += counts[index]
            else:
                passed.append(index)
        pending = passed + rest
        groups.append(members)
    sampler = AtomBudgetBatchSampler(range(600), 1200, 3, 0, seed=4, counts=counts)
    sampler.set_epoch(1)
    assert sampler.groups()[:-1] == groups[:-1] and AtomBudgetBatchSampler is BudgetBatchSampler


def test_system_with_more_edges_than_the_bound_is_named(tmp_path):
    frames = emt_frames(8)
    paths = write_shards(tmp_path / "shards", frames, 2)  # frames 0-3 and 4-7
    dataset = GraphDataset(open_dataset(tmp_path / "shards"), r_max=4.0)
    built = [int(dataset[i].edge_index.shape[1]) for i in range(8)]
    largest = int(np.argmax(built))
    where = rf"{paths[largest // 4].name}, frame {largest % 4} \({built[largest]} edges\)"
    with pytest.raises(ValueError, match=rf"max_edges_per_batch=100 is smaller than the system at .*{where}; "
                       rf"raise it to at least {built[largest]} \(or lower model\.r_max\)"):  # fmt: skip
        BudgetBatchSampler(torch.utils.data.Subset(dataset, range(8)), max_edges=100)
    with pytest.raises(ValueError, match="max_edges_per_batch must be positive, got 0"):
        BudgetBatchSampler(dataset, max_edges=0)
    with pytest.raises(ValueError, match="give max_atoms, max_edges or both"):
        BudgetBatchSampler(dataset)


@pytest.mark.parametrize("value", ["0", "-5"])
@pytest.mark.parametrize("key", ["max_atoms_per_batch", "max_edges_per_batch"])
def test_config_bounds_must_be_positive(key, value):
    from equitensor.train.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=rf"train\.{key} must be > 0, got {value}"):
        load_config(None, [f"train.{key}={value}"])
    config = load_config(None, [f"train.{key}=500"])
    assert getattr(config.train, key) == 500


def test_trainer_with_edge_bound_resumes_exactly(tmp_path):
    from equitensor.train.trainer import Trainer, seed_everything

    from .test_train_loop import make_config, run
    from .train_helpers import Crash, PairPotential, crash_at_step, save_state_dict

    graphs = _graphs(16)
    edges = [int(g.edge_index.shape[1]) for g in graphs]
    bound = max(edges) + 100  # a few systems per batch
    settings = ("train.epochs=3", "train.checkpoint_every_steps=2", f"train.max_edges_per_batch={bound}")
    full, _ = run(make_config(tmp_path / "full", *settings), graphs)
    config = make_config(tmp_path / "part", *settings)
    seed_everything(config.train.seed)
    trainer = Trainer(config, PairPotential(), graphs[:12], graphs[12:], save_best=save_state_dict)
    sizes = [int(g.edge_index.shape[1]) for g in trainer.train_loader]
    assert max(sizes) <= bound and sum(sizes) == sum(edges[:12]) and len(sizes) > 3
    crash_at_step(trainer, 4)
    with pytest.raises(Crash):
        trainer.fit()
    resumed, _ = run(config, graphs, resume=tmp_path / "part")
    assert resumed.step_losses == full.step_losses and len(full.step_losses) > 9
