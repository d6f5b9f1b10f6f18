"""Test-only pieces for the training tests: EMT graphs built with ASE and a small pair potential.

They let the trainer (loss, optimizer, resume, DDP) be tested on their own, independent of the
MACE model and the dataset readers, which have their own tests. The pair potential honours the
model contract of ``equitensor.models.MACE.forward``.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list
from torch_geometric.data import Data

R_MAX = 4.0


def emt_graphs(n_frames: int, seed: int = 0, r_max: float = R_MAX) -> list[Data]:
    """Rattled, strained 4-atom fcc Cu/Au cells labelled with EMT; atom 0 is marked fixed."""
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(n_frames):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        if rng.random() < 0.5:
            atoms.numbers[int(rng.integers(4))] = 79
        atoms.set_cell(atoms.cell * (1 + 0.03 * rng.standard_normal()), scale_atoms=True)
        atoms.positions += 0.1 * rng.standard_normal(atoms.positions.shape)
        atoms.calc = EMT()
        i, j, shifts = neighbor_list("ijS", atoms, r_max)
        fixed = torch.zeros(len(atoms), dtype=torch.bool)
        fixed[0] = True
        graphs.append(
            Data(
                pos=torch.tensor(atoms.positions),
                atomic_numbers=torch.tensor(atoms.numbers, dtype=torch.long),
                cell=torch.tensor(np.asarray(atoms.cell)).reshape(1, 3, 3),
                pbc=torch.tensor(atoms.pbc).reshape(1, 3),
                edge_index=torch.tensor(np.stack([i, j]), dtype=torch.long),
                cell_offsets=torch.tensor(shifts, dtype=torch.float64),
                energy=torch.tensor([atoms.get_potential_energy()]),
                forces=torch.tensor(atoms.get_forces()),
                natoms=torch.tensor([len(atoms)]),
                tags=torch.ones(len(atoms), dtype=torch.long),
                fixed=fixed,
            )
        )
    return graphs


class PairPotential(torch.nn.Module):
    """``E = sum_i e(Z_i) + 1/2 sum_edges phi(Z_i, Z_j, |r_ij|)`` with an MLP ``phi``; forces by autograd."""

    def __init__(self, r_max: float = R_MAX, num_basis: int = 8, hidden: int = 16):
        super().__init__()
        self.r_max = r_max
        self.register_buffer("centers", torch.linspace(1.5, r_max, num_basis))
        self.species = torch.nn.Embedding(100, 4)
        self.phi = torch.nn.Sequential(
            torch.nn.Linear(num_basis + 8, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 1)
        )
        self.atomic_energy = torch.nn.Embedding(100, 1)

    def forward(self, batch, compute_forces=True, compute_stress=False, training=False):
        pos = batch.pos
        if compute_forces:
            pos = pos.requires_grad_(True)
        sender, receiver = batch.edge_index
        cell = batch.cell.reshape(-1, 3, 3)[batch.batch[sender]]
        vectors = (
            pos[receiver] - pos[sender] + torch.einsum("ek,ekl->el", batch.cell_offsets.to(pos.dtype), cell)
        )
        distance = vectors.norm(dim=-1)
        rbf = torch.exp(-4.0 * (distance[:, None] - self.centers) ** 2)
        envelope = 0.5 * (torch.cos(torch.pi * distance / self.r_max) + 1.0)
        z = batch.atomic_numbers
        features = torch.cat([rbf, self.species(z[sender]), self.species(z[receiver])], dim=-1)
        edge_energy = self.phi(features).squeeze(-1) * envelope
        node_energy = self.atomic_energy(z).squeeze(-1) + 0.5 * torch.zeros_like(pos[:, 0]).index_add(
            0, receiver, edge_energy
        )
        energy = torch.zeros(batch.num_graphs, dtype=pos.dtype, device=pos.device).index_add(
            0, batch.batch, node_energy
        )
        forces = None
        if compute_forces:
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=training)
            forces = -grad
        return {"energy": energy, "node_energy": node_energy, "forces": forces, "stress": None}


def save_state_dict(model: torch.nn.Module, path) -> None:
    """``save_best`` callback for tests: the model's state dict."""
    torch.save(model.state_dict(), path)


class Crash(RuntimeError):
    """Simulated interruption (power loss, pre-emption) in the middle of training."""


def crash_at_step(trainer, step: int) -> None:
    """Make ``trainer`` raise :class:`Crash` when it is about to take optimizer step ``step``."""
    train_step = trainer.train_step

    def crashing_step(batch):
        if trainer.global_step == step:
            raise Crash
        return train_step(batch)

    trainer.train_step = crashing_step
