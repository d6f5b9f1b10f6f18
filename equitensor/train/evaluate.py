"""Evaluate a model on a dataset: aggregate metrics plus one row of predictions per frame."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

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
) -> tuple[dict, list[dict]]:
    """Metrics over ``dataset`` (see :mod:`equitensor.train.metrics`) and per-frame prediction rows.

    Per-frame force columns use the same atoms as the metrics (free atoms when ``fixed`` is given
    and ``free_atoms_only``).
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
        natoms = atoms_per_graph(batch)
        mask = force_mask(batch, free_atoms_only)
        keep = torch.ones(batch.num_nodes, dtype=torch.bool, device=device) if mask is None else mask
        df = (pred["forces"] - batch.forces)[keep].abs()
        graph = batch.batch[keep]
        cos = torch.nn.functional.cosine_similarity(pred["forces"][keep], batch.forces[keep], dim=-1, eps=1e-12)
        for g in range(batch.num_graphs):
            sel = graph == g
            e_true = float(batch.energy.reshape(-1)[g])
            e_pred = float(pred["energy"][g])
            f_err = df[sel]
            max_f = float(f_err.max()) if f_err.numel() else 0.0
            rows.append(
                {
                    "frame": len(rows),
                    "natoms": int(natoms[g]),
                    "energy_true": e_true,
                    "energy_pred": e_pred,
                    "energy_error": e_pred - e_true,
                    "energy_per_atom_error": (e_pred - e_true) / int(natoms[g]),
                    "forces_mae": float(f_err.mean()) if f_err.numel() else 0.0,
                    "forces_max_abs_error": max_f,
                    "forces_cosine": float(cos[sel].mean()) if sel.any() else float("nan"),
                    "efwt": int(abs(e_pred - e_true) < EFWT_ENERGY_THRESHOLD and max_f < EFWT_FORCE_THRESHOLD),
                }
            )
    return acc.compute(), rows


def write_predictions(rows: list[dict], path: str | Path) -> Path:
    """Write per-frame rows from :func:`evaluate_model` as CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path
