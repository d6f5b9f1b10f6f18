"""Size-aware batching: atom bound, rank balance, determinism, exact resume, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from equitensor.datasets import AtomsToGraph, GraphDataset, open_dataset
from equitensor.datasets.batching import AtomBudgetBatchSampler, atom_counts

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
