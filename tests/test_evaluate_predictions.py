"""``evaluate`` per-atom outputs: predictions extxyz (streamed, atomic) and the parity plot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.io import read

from equitensor.train.evaluate import evaluate_model
from equitensor.train.predictions import PredictionWriter, plot_parity

from .train_helpers import PairPotential, emt_graphs


def test_extxyz_holds_every_atom_and_matches_the_model(tmp_path):
    torch.manual_seed(0)
    graphs = emt_graphs(5, seed=3)
    model = PairPotential().double()
    writer = PredictionWriter(tmp_path / "pred.extxyz")
    metrics, rows = evaluate_model(model, graphs, batch_size=2, on_batch=writer)
    assert not (tmp_path / "pred.extxyz").exists()  # only the temporary file until close()
    writer.close()
    frames = read(tmp_path / "pred.extxyz", index=":")
    assert len(frames) == 5 and writer.frames == 5
    for frame, graph, row in zip(frames, graphs, rows, strict=True):
        np.testing.assert_allclose(frame.positions, graph.pos.numpy(), atol=1e-8)
        np.testing.assert_array_equal(frame.numbers, graph.atomic_numbers.numpy())
        assert frame.info["REF_energy"] == pytest.approx(float(graph.energy))
        assert frame.info["pred_energy"] == pytest.approx(row["energy_pred"])
        np.testing.assert_allclose(frame.arrays["REF_forces"], graph.forces.numpy(), atol=1e-8)
        single = model(_batched(graph))
        np.testing.assert_allclose(frame.arrays["pred_forces"], single["forces"].detach().numpy(), atol=1e-8)
        np.testing.assert_array_equal(frame.arrays["fixed"], graph.fixed.numpy())
    # parity points: free atoms only, as the metrics
    free = sum(int((~g.fixed).sum()) for g in graphs)
    assert np.concatenate(writer.forces, axis=1).shape == (2, 3 * free)
    mae = np.abs(np.diff(np.concatenate(writer.forces, axis=1), axis=0)).mean()
    assert mae == pytest.approx(metrics["forces_mae"])
    png = plot_parity(writer, tmp_path / "parity.png")
    assert png.stat().st_size > 1000 and not list(tmp_path.glob("*.tmp*"))


def _batched(graph):
    from torch_geometric.data import Batch

    return Batch.from_data_list([graph])
