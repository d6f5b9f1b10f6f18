"""Weighted energy / force / stress loss with a normalisation that is exact under DDP.

Each term is a *sum* of per-item errors divided by the number of items in the **global** batch
(all ranks together):

* energy: items are systems, error ``f((E_pred - E_true) / N_atoms)`` (energy per atom, as MACE);
* forces: items are force components of the atoms that count (free atoms only when
  ``forces_on_free_atoms_only`` and the batch has ``fixed``), error ``f(F_pred - F_true)``;
* stress: items are the 9 components of each system that carries a stress label.

``f`` is the square (``kind: mse``) or the Huber function (``kind: huber``). The loss of one rank is
``sum_k w_k * local_sum_k * world_size / global_count_k``. DDP averages gradients over ranks, i.e.
divides the sum of the rank gradients by ``world_size``; that cancels the factor and leaves the
gradient of ``sum_k w_k * global_sum_k / global_count_k``, which is exactly the loss of one
process that sees the whole global batch. The global counts cost one small all-reduce per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import LossConfig

__all__ = ["LossTerms", "WeightedLoss", "force_mask"]

TERMS = ("energy", "forces", "stress")


@dataclass
class LossTerms:
    """Per-term error sums and item counts of one batch (or of many, accumulated)."""

    sums: torch.Tensor  # [3] energy, forces, stress
    counts: torch.Tensor  # [3]

    def __add__(self, other: LossTerms) -> LossTerms:
        return LossTerms(self.sums + other.sums, self.counts + other.counts)


def force_mask(batch, free_only: bool) -> torch.Tensor | None:
    """Boolean [N] mask of the atoms whose forces count, or ``None`` for all atoms."""
    fixed = getattr(batch, "fixed", None)
    if not free_only or fixed is None:
        return None
    return ~fixed.to(torch.bool).reshape(-1)


def atoms_per_graph(batch) -> torch.Tensor:
    """Number of atoms of each system of a PyG batch, [B] long."""
    return torch.bincount(batch.batch, minlength=batch.num_graphs)


class WeightedLoss:
    """``w_E * energy-per-atom term + w_F * force term + w_S * stress term`` (see module docstring)."""

    def __init__(self, config: LossConfig):
        self.config = config
        self.weights = torch.tensor([config.energy_weight, config.forces_weight, config.stress_weight])

    def _error(self, residual: torch.Tensor) -> torch.Tensor:
        if self.config.kind == "mse":
            return residual.square()
        return torch.nn.functional.huber_loss(
            residual, torch.zeros_like(residual), reduction="none", delta=self.config.huber_delta
        )

    def terms(self, pred: dict, batch) -> LossTerms:
        """Error sums and counts of the three terms for this (local) batch."""
        dtype = pred["energy"].dtype
        device = pred["energy"].device
        zero = torch.zeros((), dtype=dtype, device=device)
        sums, counts = [zero, zero, zero], [0.0, 0.0, 0.0]
        natoms = atoms_per_graph(batch).to(dtype)
        if self.config.energy_weight > 0:
            residual = (pred["energy"] - batch.energy.reshape(-1).to(dtype)) / natoms
            sums[0] = self._error(residual).sum()
            counts[0] = float(residual.numel())
        if self.config.forces_weight > 0:
            residual = pred["forces"] - batch.forces.to(dtype)
            mask = force_mask(batch, self.config.forces_on_free_atoms_only)
            if mask is not None:
                residual = residual[mask]
            sums[1] = self._error(residual).sum()
            counts[1] = float(residual.numel())
        if self.config.stress_weight > 0:
            stress_true = getattr(batch, "stress", None)
            if stress_true is None or pred.get("stress") is None:
                raise ValueError(
                    "loss.stress_weight > 0 but the batch has no 'stress' label or the model returned none"
                )
            residual = pred["stress"] - stress_true.reshape(-1, 3, 3).to(dtype)
            sums[2] = self._error(residual).sum()
            counts[2] = float(residual.numel())
        return LossTerms(torch.stack(sums), torch.tensor(counts, dtype=dtype, device=device))

    def combine(self, terms: LossTerms, global_counts: torch.Tensor | None = None, world_size: int = 1):
        """Scalar loss from term sums.

        Args:
            terms: this rank's sums and counts.
            global_counts: counts summed over all ranks (``None``: single process, use ``terms.counts``).
            world_size: number of DDP ranks (the factor that DDP's gradient averaging divides out).
        """
        counts = terms.counts if global_counts is None else global_counts
        weights = self.weights.to(terms.sums)
        active = counts > 0
        scaled = torch.where(active, terms.sums * world_size / counts.clamp(min=1), torch.zeros_like(terms.sums))
        return (weights * scaled).sum()
