"""The one irreps interface: ``Irreps`` (e3nn's type, e3nn's string syntax) and layout helpers.

Public tensors use e3nn's ``mul_ir`` layout: for ``"2x0e+3x1o"`` the last axis is
``[u0, u1 | (u0,m-1) (u0,m0) (u0,m1) (u1,...) (u2,...)]``, i.e. each block is ``[mul, 2l+1]``
flattened with the multiplicity outermost. ``ir_mul`` (used internally by some backends, as in
cuEquivariance) stores each block as ``[2l+1, mul]``.
"""

from __future__ import annotations

import numpy as np
import torch
from e3nn import o3

Irrep = o3.Irrep


class Irreps(o3.Irreps):
    """``e3nn.o3.Irreps`` with errors that say what was expected.

    >>> Irreps("16x0e + 8x1o").dim
    40
    """

    def __new__(cls, irreps=None):
        try:
            return super().__new__(cls, irreps)
        except (ValueError, AssertionError, TypeError) as error:
            raise ValueError(
                f"cannot parse irreps {irreps!r}: expected e3nn syntax such as '16x0e + 8x1o + 4x2e' "
                f"(multiplicity 'x' degree, parity e or o) ({error})"
            ) from None


def as_irreps(irreps) -> Irreps:
    """Coerce a string, ``o3.Irreps`` or list of ``(mul, ir)`` into :class:`Irreps`."""
    return irreps if isinstance(irreps, Irreps) else Irreps(irreps)


def natural_irrep(l: int) -> Irrep:
    """The degree-``l`` irrep of natural parity ``p = (-1)^l`` (``0e, 1o, 2e, 3o, ...``).

    >>> str(natural_irrep(3))
    '3o'
    """
    return Irrep(l, (-1) ** l)


def natural_irreps(lmax: int, mul: int = 1, lmin: int = 0) -> Irreps:
    """``mul x`` each natural-parity irrep of degree ``lmin..lmax`` (MACE's ``num_channels``/``max_L``).

    >>> str(natural_irreps(2, mul=4))
    '4x0e+4x1o+4x2e'
    """
    return Irreps([(mul, natural_irrep(l)) for l in range(lmin, lmax + 1)])


def irrep_slices(irreps) -> list[slice]:
    """Slice of each ``mul x ir`` block along the last axis (mul_ir layout)."""
    return list(as_irreps(irreps).slices())


def check_last_dim(tensor: torch.Tensor, irreps, name: str, dim: int | None = None) -> None:
    """Raise ``ValueError`` unless ``tensor.shape[-1] == irreps.dim``.

    ``dim``: ``irreps.dim`` computed beforehand, so that code traced by ``torch.compile`` never
    iterates an ``Irrep`` (whose ``__len__`` raises in e3nn, which breaks dynamo's guards).
    """
    dim = as_irreps(irreps).dim if dim is None else dim
    if tensor.ndim == 0 or tensor.shape[-1] != dim:
        irreps = as_irreps(irreps)
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)} but irreps {irreps} need last dimension {irreps.dim}"
        )


def ir_mul_permutation(irreps) -> np.ndarray:
    """Column order ``p`` with ``x[..., p] == mul_ir_to_ir_mul(x, irreps)`` (int64, ``[irreps.dim]``).

    Block ``(mul, ir)`` at ``start`` puts component ``i`` of channel ``u`` at ``start + i * mul + u``;
    ``np.argsort(p)`` is the inverse order. An index gather is one copy, where the block-wise
    transposes below make one per block.
    """
    irreps = as_irreps(irreps)
    columns = [np.zeros(0, dtype=np.int64)]
    for s, (mul, ir) in zip(irreps.slices(), irreps):
        columns.append(s.start + (np.arange(mul)[None, :] * ir.dim + np.arange(ir.dim)[:, None]).reshape(-1))
    return np.concatenate(columns)


def mul_ir_to_ir_mul(x: torch.Tensor, irreps) -> torch.Tensor:
    """Reorder ``[..., irreps.dim]`` from mul_ir to ir_mul (each block ``[mul, 2l+1] -> [2l+1, mul]``)."""
    irreps = as_irreps(irreps)
    blocks = [
        x[..., s].reshape(*x.shape[:-1], mul, ir.dim).transpose(-1, -2).reshape(*x.shape[:-1], mul * ir.dim)
        for s, (mul, ir) in zip(irreps.slices(), irreps)
    ]
    return torch.cat(blocks, dim=-1) if blocks else x


def ir_mul_to_mul_ir(x: torch.Tensor, irreps) -> torch.Tensor:
    """Inverse of :func:`mul_ir_to_ir_mul`."""
    irreps = as_irreps(irreps)
    blocks = [
        x[..., s].reshape(*x.shape[:-1], ir.dim, mul).transpose(-1, -2).reshape(*x.shape[:-1], mul * ir.dim)
        for s, (mul, ir) in zip(irreps.slices(), irreps)
    ]
    return torch.cat(blocks, dim=-1) if blocks else x
