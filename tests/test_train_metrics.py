"""Metric definitions (hand-computed cases) and the DDP-exact loss normalisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from equitensor.train.config import LossConfig
from equitensor.train.losses import WeightedLoss
from equitensor.train.metrics import MetricAccumulator


def T(values):
    return torch.tensor(values, dtype=torch.float64)


def two_systems():
    a = Data(energy=T([-10.0]), forces=T([[1.0, 0, 0], [0, 1.0, 0]]),
             fixed=torch.tensor([False, True]), pos=torch.zeros(2, 3, dtype=torch.float64))
    b = Data(energy=T([-20.0]), forces=T([[0, 0, 1.0], [1.0, 1.0, 0], [0, 0, 0.5]]),
             fixed=torch.tensor([False, False, False]), pos=torch.zeros(3, 3, dtype=torch.float64))
    batch = Batch.from_data_list([a, b])
    pred = {
        "energy": T([-10.01, -20.3]),
        "forces": T([[1.0, 0.02, 0], [5.0, 5.0, 5.0], [0, 0, -1.0], [1.0, 1.0, 0], [0, 0, 0.5]]),
    }
    return batch, pred


def test_metrics_hand_computed():
    batch, pred = two_systems()
    acc = MetricAccumulator(free_atoms_only=True)
    acc.update(pred, batch)
    m = acc.compute()
    assert m["energy_mae"] == pytest.approx((0.01 + 0.3) / 2)
    assert m["energy_rmse"] == pytest.approx(math.sqrt((0.01**2 + 0.3**2) / 2))
    assert m["energy_per_atom_mae"] == pytest.approx((0.01 / 2 + 0.3 / 3) / 2)
    # free atoms only: the fixed atom (huge error) is ignored; 4 atoms x 3 components
    assert m["forces_mae"] == pytest.approx((0.02 + 2.0) / 12)
    assert m["forces_rmse"] == pytest.approx(math.sqrt((0.02**2 + 4.0) / 12))
    cos_first = 1.0 / math.sqrt(1 + 0.02**2)
    assert m["forces_cosine"] == pytest.approx((cos_first - 1 + 1 + 1) / 4)
    # system a: |dE| 0.01 < 0.02 and max |dF| 0.02 < 0.03 -> hit; system b misses
    assert m["efwt"] == pytest.approx(0.5)
    everything = MetricAccumulator(free_atoms_only=False)
    everything.update(pred, batch)
    assert everything.compute()["forces_mae"] == pytest.approx((0.02 + 5.0 + 4.0 + 5.0 + 2.0) / 15)
    assert everything.compute()["efwt"] == 0.0


def test_split_batches_give_the_same_metrics():
    batch, pred = two_systems()
    whole = MetricAccumulator()
    whole.update(pred, batch)
    parts = [MetricAccumulator(), MetricAccumulator()]
    for k, acc in enumerate(parts):
        sub = Batch.from_data_list([batch.get_example(k)])
        atoms = batch.batch == k
        acc.update({"energy": pred["energy"][k : k + 1], "forces": pred["forces"][atoms]}, sub)
    merged = MetricAccumulator()
    merged.merge_sums(parts[0].sums + parts[1].sums)
    assert merged.compute() == pytest.approx(whole.compute())


@pytest.mark.parametrize("kind", ["mse", "huber"])
def test_rank_losses_average_to_the_global_batch_loss(kind):
    """DDP averages rank gradients; the rank losses must average to the one-process loss."""
    batch, pred = two_systems()
    loss_fn = WeightedLoss(LossConfig(kind=kind, energy_weight=1.0, forces_weight=10.0))
    single = loss_fn.combine(loss_fn.terms(pred, batch))
    ranks = []
    for k in range(2):
        sub = Batch.from_data_list([batch.get_example(k)])
        atoms = batch.batch == k
        ranks.append(loss_fn.terms({"energy": pred["energy"][k : k + 1], "forces": pred["forces"][atoms]}, sub))
    global_counts = ranks[0].counts + ranks[1].counts
    ddp_mean = sum(loss_fn.combine(t, global_counts, world_size=2) for t in ranks) / 2
    assert float(ddp_mean) == pytest.approx(float(single), rel=1e-12)
    # and the plain per-rank mean (the naive normalisation) would differ
    naive = sum(loss_fn.combine(t) for t in ranks) / 2
    assert float(naive) != pytest.approx(float(single), rel=1e-3)
    if kind == "mse":
        e_term = ((0.01 / 2) ** 2 + (0.3 / 3) ** 2) / 2
        f_term = (0.02**2 + 4.0) / 12
        assert float(single) == pytest.approx(e_term + 10.0 * f_term)
