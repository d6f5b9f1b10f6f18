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
    a = Data(
        energy=T([-10.0]),
        forces=T([[1.0, 0, 0], [0, 1.0, 0]]),
        fixed=torch.tensor([False, True]),
        pos=torch.zeros(2, 3, dtype=torch.float64),
    )
    b = Data(
        energy=T([-20.0]),
        forces=T([[0, 0, 1.0], [1.0, 1.0, 0], [0, 0, 0.5]]),
        fixed=torch.tensor([False, False, False]),
        pos=torch.zeros(3, 3, dtype=torch.float64),
    )
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
        ranks.append(
            loss_fn.terms({"energy": pred["energy"][k : k + 1], "forces": pred["forces"][atoms]}, sub)
        )
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


@pytest.mark.parametrize("free_atoms_only", [True, False])
def test_prediction_rows_match_a_per_frame_reference(free_atoms_only):
    """evaluate_model's per-frame rows (batched reductions) == each frame computed on its own, in numpy."""
    import numpy as np

    from equitensor.train.evaluate import evaluate_model
    from equitensor.train.metrics import EFWT_ENERGY_THRESHOLD, EFWT_FORCE_THRESHOLD

    from .train_helpers import PairPotential, emt_graphs

    torch.manual_seed(0)
    graphs, model = emt_graphs(5), PairPotential().double()
    _, rows = evaluate_model(model, graphs, batch_size=3, free_atoms_only=free_atoms_only)
    assert [row["frame"] for row in rows] == list(range(5))
    for graph, row in zip(graphs, rows):
        out = model(Batch.from_data_list([graph]), compute_forces=True)
        keep = ~graph.fixed.numpy() if free_atoms_only else np.ones(graph.num_nodes, dtype=bool)
        predicted, true = out["forces"].detach().numpy()[keep], graph.forces.numpy()[keep]
        e_pred, e_true = float(out["energy"][0]), float(graph.energy[0])
        cosine = (predicted * true).sum(1) / np.maximum(np.linalg.norm(predicted, axis=1) * np.linalg.norm(true, axis=1), 1e-12)
        expected = {
            "natoms": graph.num_nodes, "energy_true": e_true, "energy_pred": e_pred, "energy_error": e_pred - e_true,
            "energy_per_atom_error": (e_pred - e_true) / graph.num_nodes,
            "forces_mae": np.abs(predicted - true).mean(), "forces_max_abs_error": np.abs(predicted - true).max(),
            "forces_cosine": cosine.mean(),
            "efwt": int(abs(e_pred - e_true) < EFWT_ENERGY_THRESHOLD and np.abs(predicted - true).max() < EFWT_FORCE_THRESHOLD),
        }  # fmt: skip
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-10, abs=1e-12), key
