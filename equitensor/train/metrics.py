"""Energy / force metrics as fairchem (OC20) and MACE report them, accumulated as reducible sums.

Definitions (``ΔE = E_pred - E_true`` per system, ``ΔF`` per force component; force metrics use
the free atoms only, ``fixed == False``, when the data marks fixed atoms, as OC20 does):

* ``energy_mae`` / ``energy_rmse``: mean |ΔE| and sqrt(mean ΔE²) over systems (eV);
* ``energy_per_atom_mae`` / ``energy_per_atom_rmse``: the same with ΔE / N_atoms (eV/atom);
* ``forces_mae`` / ``forces_rmse``: mean |ΔF| and sqrt(mean ΔF²) over components (eV/Å);
* ``forces_cosine``: mean over atoms of the cosine between predicted and true force vectors;
* ``efwt``: fraction of systems with |ΔE| < 0.02 eV **and** max |ΔF| over components < 0.03 eV/Å
  (fairchem's "energy and forces within threshold");
* ``stress_mae`` / ``stress_rmse`` when stress labels exist (eV/Å³).

Everything is kept as sums in one float64 tensor, so a distributed evaluation all-reduces that
tensor once and every rank computes identical metrics.
"""

from __future__ import annotations

import math

import torch

from .losses import atoms_per_graph

__all__ = ["EFWT_ENERGY_THRESHOLD", "EFWT_FORCE_THRESHOLD", "MetricAccumulator", "format_metrics"]

EFWT_ENERGY_THRESHOLD = 0.02  # eV
EFWT_FORCE_THRESHOLD = 0.03  # eV/Å

_FIELDS = (
    "n_systems",
    "e_abs",
    "e_sq",
    "epa_abs",
    "epa_sq",
    "n_force_components",
    "f_abs",
    "f_sq",
    "n_force_atoms",
    "f_cos",
    "efwt_hits",
    "n_stress_components",
    "s_abs",
    "s_sq",
)


class MetricAccumulator:
    """Accumulates prediction errors batch by batch; :meth:`compute` returns the metrics."""

    def __init__(self, free_atoms_only: bool = True):
        self.free_atoms_only = free_atoms_only
        self.sums = torch.zeros(len(_FIELDS), dtype=torch.float64)

    def _add(self, name: str, value) -> None:
        self.sums[_FIELDS.index(name)] += float(value)

    @torch.no_grad()
    def update(self, pred: dict, batch) -> None:
        """Add one batch. ``pred`` holds ``energy`` [B], ``forces`` [N,3] and optionally ``stress``."""
        natoms = atoms_per_graph(batch).to(torch.float64).cpu()
        e_pred = pred["energy"].detach().to(torch.float64).cpu().reshape(-1)
        e_true = batch.energy.detach().to(torch.float64).cpu().reshape(-1)
        de = e_pred - e_true
        self._add("n_systems", de.numel())
        self._add("e_abs", de.abs().sum())
        self._add("e_sq", de.square().sum())
        self._add("epa_abs", (de / natoms).abs().sum())
        self._add("epa_sq", (de / natoms).square().sum())

        f_pred = pred["forces"].detach().to(torch.float64).cpu()
        f_true = batch.forces.detach().to(torch.float64).cpu()
        graph = batch.batch.cpu()
        fixed = getattr(batch, "fixed", None)
        if self.free_atoms_only and fixed is not None:
            keep = ~fixed.cpu().to(torch.bool).reshape(-1)
            f_pred, f_true, graph = f_pred[keep], f_true[keep], graph[keep]
        df = f_pred - f_true
        self._add("n_force_components", df.numel())
        self._add("f_abs", df.abs().sum())
        self._add("f_sq", df.square().sum())
        self._add("n_force_atoms", df.shape[0])
        self._add("f_cos", torch.nn.functional.cosine_similarity(f_pred, f_true, dim=-1, eps=1e-12).sum())
        max_df = torch.zeros(de.numel(), dtype=torch.float64)
        if df.numel():
            max_df = max_df.scatter_reduce(0, graph, df.abs().amax(dim=-1), reduce="amax", include_self=True)
        hits = (de.abs() < EFWT_ENERGY_THRESHOLD) & (max_df < EFWT_FORCE_THRESHOLD)
        self._add("efwt_hits", hits.sum())

        s_true = getattr(batch, "stress", None)
        if s_true is not None and pred.get("stress") is not None:
            ds = pred["stress"].detach().to(torch.float64).cpu() - s_true.to(torch.float64).cpu().reshape(-1, 3, 3)
            self._add("n_stress_components", ds.numel())
            self._add("s_abs", ds.abs().sum())
            self._add("s_sq", ds.square().sum())

    def merge_sums(self, sums: torch.Tensor) -> None:
        """Replace the local sums by reduced (e.g. all-reduced) ones."""
        self.sums = sums.to(torch.float64).cpu().clone()

    def compute(self) -> dict[str, float]:
        s = dict(zip(_FIELDS, self.sums.tolist()))
        n, nf, na = s["n_systems"], s["n_force_components"], s["n_force_atoms"]
        out = {
            "energy_mae": s["e_abs"] / n if n else math.nan,
            "energy_rmse": math.sqrt(s["e_sq"] / n) if n else math.nan,
            "energy_per_atom_mae": s["epa_abs"] / n if n else math.nan,
            "energy_per_atom_rmse": math.sqrt(s["epa_sq"] / n) if n else math.nan,
            "forces_mae": s["f_abs"] / nf if nf else math.nan,
            "forces_rmse": math.sqrt(s["f_sq"] / nf) if nf else math.nan,
            "forces_cosine": s["f_cos"] / na if na else math.nan,
            "efwt": s["efwt_hits"] / n if n else math.nan,
        }
        if s["n_stress_components"]:
            out["stress_mae"] = s["s_abs"] / s["n_stress_components"]
            out["stress_rmse"] = math.sqrt(s["s_sq"] / s["n_stress_components"])
        return out


def format_metrics(metrics: dict[str, float]) -> str:
    """One human-readable line in meV units, e.g. ``E/atom MAE 1.2 meV | F MAE 30.1 meV/Å ...``."""
    parts = [
        f"E MAE {1e3 * metrics['energy_mae']:.1f} meV",
        f"E/atom MAE {1e3 * metrics['energy_per_atom_mae']:.2f} RMSE {1e3 * metrics['energy_per_atom_rmse']:.2f} meV",
        f"F MAE {1e3 * metrics['forces_mae']:.1f} RMSE {1e3 * metrics['forces_rmse']:.1f} meV/Å",
        f"F cos {metrics['forces_cosine']:.3f}",
        f"EFwT {100 * metrics['efwt']:.1f}%",
    ]
    if "stress_mae" in metrics:
        parts.append(f"S MAE {1e3 * metrics['stress_mae']:.2f} meV/Å³")
    return " | ".join(parts)
