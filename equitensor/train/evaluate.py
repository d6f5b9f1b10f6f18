"""Evaluate a model on a dataset: aggregate metrics plus one row of predictions per frame."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

from ..atomic import atomic_write
from .losses import atoms_per_graph, force_mask
from .metrics import EFWT_ENERGY_THRESHOLD, EFWT_FORCE_THRESHOLD, MetricAccumulator
from .trainer import batch_to

__all__ = ["evaluate_model", "write_predictions"]

PREDICTION_COLUMNS = (
    "frame",
    "natoms",
    "energy_true",
    "energy_pred",
    "energy_error",
    "energy_per_atom_error",
    "forces_mae",
    "forces_max_abs_error",
    "forces_cosine",
    "efwt",
)


def evaluate_model(
    model: torch.nn.Module,
    dataset: Sequence,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
    free_atoms_only: bool = True,
    progress: bool = False,
    on_batch: Callable[[object, dict], None] | None = None,
) -> tuple[dict, list[dict]]:
    """Metrics over ``dataset`` (see :mod:`equitensor.train.metrics`) and per-frame prediction rows.

    Per-frame force columns use the same atoms as the metrics (free atoms when ``fixed`` is given
    and ``free_atoms_only``). ``on_batch(batch, predictions)`` is called for every batch (e.g. a
    :class:`~equitensor.train.predictions.PredictionWriter`).
    """
    device = torch.device(device)
    model = model.to(device=device, dtype=dtype).eval()
    acc = MetricAccumulator(free_atoms_only)
    rows: list[dict] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="evaluate", disable=not progress):
        batch = batch_to(batch, device, dtype)
        pred = model(batch, compute_forces=True, compute_stress=False, training=False)
        pred = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in pred.items()}
        acc.update(pred, batch)
        if on_batch is not None:
            on_batch(batch, pred)
        rows.extend(_frame_rows(pred, batch, free_atoms_only, first_frame=len(rows)))
    return acc.compute(), rows


def _frame_rows(pred: dict, batch, free_atoms_only: bool, first_frame: int) -> list[dict]:
    """One prediction row per graph of ``batch``: per-graph reductions on the device, one read each."""
    graphs = batch.num_graphs
    mask = force_mask(batch, free_atoms_only)
    keep = torch.ones(batch.num_nodes, dtype=torch.bool, device=batch.pos.device) if mask is None else mask
    graph = batch.batch[keep]
    error = (pred["forces"] - batch.forces)[keep].abs()  # [n_kept, 3]
    cos = torch.nn.functional.cosine_similarity(pred["forces"][keep], batch.forces[keep], dim=-1, eps=1e-12)
    zeros = error.new_zeros(graphs)
    counted = zeros.index_add(0, graph, torch.ones_like(cos))
    error_sum = zeros.index_add(0, graph, error.sum(dim=1))
    error_max = zeros.scatter_reduce(0, graph, error.amax(dim=1), reduce="amax", include_self=True)  # errors >= 0
    cos_sum = zeros.index_add(0, graph, cos)
    has_atoms = counted > 0
    forces_mae = torch.where(has_atoms, error_sum / (3 * counted.clamp(min=1)), zeros)
    forces_cosine = torch.where(has_atoms, cos_sum / counted.clamp(min=1), torch.full_like(zeros, float("nan")))
    e_true, e_pred = batch.energy.reshape(-1), pred["energy"].reshape(-1)
    columns = zip(
        atoms_per_graph(batch).tolist(), e_true.tolist(), e_pred.tolist(), forces_mae.tolist(),
        error_max.tolist(), forces_cosine.tolist(),
    )  # fmt: skip
    rows = []
    for g, (natoms, true, predicted, mae, max_error, cosine) in enumerate(columns):
        natoms = int(natoms)
        rows.append(
            {
                "frame": first_frame + g,
                "natoms": natoms,
                "energy_true": true,
                "energy_pred": predicted,
                "energy_error": predicted - true,
                "energy_per_atom_error": (predicted - true) / natoms,
                "forces_mae": mae,
                "forces_max_abs_error": max_error,
                "forces_cosine": cosine,
                "efwt": int(abs(predicted - true) < EFWT_ENERGY_THRESHOLD and max_error < EFWT_FORCE_THRESHOLD),
            }
        )
    return rows


def write_predictions(rows: list[dict], path: str | Path) -> Path:
    """Write per-frame rows from :func:`evaluate_model` as CSV (atomically)."""
    path = Path(path)
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path
