"""Test-only helpers: random irreps inputs and rotation of irreps-valued tensors."""

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
