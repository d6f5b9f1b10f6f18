"""Test-only helpers: rotation of irreps-valued tensors, the force-training derivatives of a product basis."""

from __future__ import annotations

import numpy as np
import torch

from equitensor import so3
from equitensor.irreps import as_irreps


def irreps_rotation(irreps, rotation: np.ndarray) -> torch.Tensor:
    """Block-diagonal representation ``[dim, dim]`` (mul_ir layout) of an orthogonal 3x3 matrix."""
    irreps = as_irreps(irreps)
    blocks = []
    for mul, ir in irreps:
        d = so3.wigner_D_from_matrix(ir.l, rotation, parity=ir.p)
        blocks.extend([d] * mul)
    dim = irreps.dim
    out = np.zeros((dim, dim))
    start = 0
    for b in blocks:
        n = b.shape[0]
        out[start : start + n, start : start + n] = b
        start += n
    return torch.tensor(out)


def rotate(x: torch.Tensor, irreps, rotation: np.ndarray) -> torch.Tensor:
    """Apply the representation of ``rotation`` to ``x [..., dim]``."""
    return x @ irreps_rotation(irreps, rotation).to(x.dtype).T


def force_training_results(basis, x: torch.Tensor, elements: torch.Tensor, r: torch.Tensor, s: torch.Tensor) -> list:
    """What force training differentiates through a product basis, for comparing two executions.

    ``energy = <basis(x), r>``; ``force = d energy / d x`` with a graph; the loss
    ``energy + <force, s> + sum |d energy / d w|^2`` is backpropagated. Returns the output, the
    force, the loss gradient w.r.t. ``x`` and w.r.t. every parameter.
    """
    xg = x.clone().requires_grad_(True)
    energy = (basis(xg, elements) * r).sum()
    (force,) = torch.autograd.grad(energy, xg, create_graph=True)
    weight_grads = torch.autograd.grad(energy, list(basis.parameters()), create_graph=True)
    (energy + (force * s).sum() + sum((g * g).sum() for g in weight_grads)).backward()
    return [basis(x, elements), force, xg.grad, *(p.grad for p in basis.parameters())]
