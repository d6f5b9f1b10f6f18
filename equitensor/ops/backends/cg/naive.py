"""Method ``naive``: the reference, one ``einsum`` per path, then a sum per output block."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .... import so3
from ...descriptor import TensorProductDescriptor
from .executor import Executor

_EINSUM = {
    # (x1 [z,u,i], x2 [z,v,j], C [i,j,k]) -> products, then weights (per sample, shared)
    "uvw": ("zui,zvj,ijk->zuvk", "zuvk,zuvw->zwk", "zuvk,uvw->zwk"),
    "uvu": ("zui,zvj,ijk->zuvk", "zuvk,zuv->zuk", "zuvk,uv->zuk"),
    "uvv": ("zui,zvj,ijk->zuvk", "zuvk,zuv->zvk", "zuvk,uv->zvk"),
    "uuw": ("zui,zuj,ijk->zuk", "zuk,zuw->zwk", "zuk,uw->zwk"),
    "uuu": ("zui,zuj,ijk->zuk", "zuk,zu->zuk", "zuk,u->zuk"),
}
_UNWEIGHTED = {"uvu": "zuvk->zuk", "uvv": "zuvk->zvk", "uuu": "zuk->zuk"}


class _Block(NamedTuple):
    start: int
    mul: int
    dim: int


class _Path(NamedTuple):
    """One instruction as plain ints and strings (what forward reads)."""

    in1: _Block
    in2: _Block
    out: int  # index of the output block
    product: str  # einsum: x1, x2, CG block -> products
    per_sample: str  # einsum: products, weights [z, ...] -> output block (unweighted: products -> block)
    shared: str  # einsum: products, weights [...] -> output block
    weights: slice | None  # the path's columns of the flat weight; None: the path has no weight
    weight_shape: tuple[int, ...]


class NaivePaths(Executor):
    """Every instruction as its own ``einsum`` with its CG block (the tests' reference)."""

    method = "naive"

    def __init__(self, descriptor: TensorProductDescriptor):
        super().__init__()
        d = descriptor
        blocks = [
            [_Block(s.start, mul, ir.dim) for s, (mul, ir) in zip(irreps.slices(), irreps)]
            for irreps in (d.irreps_in1, d.irreps_in2, d.irreps_out)
        ]
        self.out_blocks = blocks[2]
        self.paths: list[_Path] = []
        for k, (ins, wslice) in enumerate(zip(d.instructions, d.weight_slices())):
            l1, l2, lo = (ir.l for ir in d.path_irreps(ins))
            self.add_table(f"cg_{k}", ins.coefficient * so3.wigner_3j(l1, l2, lo))
            product, per_sample, shared = _EINSUM[ins.mode]
            if not ins.has_weight:
                per_sample = _UNWEIGHTED[ins.mode]
            self.paths.append(_Path(
                blocks[0][ins.i_in1], blocks[1][ins.i_in2], ins.i_out, product, per_sample, shared, wslice,
                ins.weight_shape,
            ))  # fmt: skip

    def __call__(self, x1, x2, weight):
        z = x1.shape[0]
        outputs = [[] for _ in self.out_blocks]
        for k, path in enumerate(self.paths):
            products = torch.einsum(path.product, _block(x1, path.in1), _block(x2, path.in2), self.table(f"cg_{k}", x1))
            if path.weights is None:
                out = torch.einsum(path.per_sample, products)
            elif weight.ndim == 1:
                out = torch.einsum(path.shared, products, weight[path.weights].reshape(path.weight_shape))
            else:
                out = torch.einsum(path.per_sample, products, weight[:, path.weights].reshape(z, *path.weight_shape))
            outputs[path.out].append(out)
        result = [
            torch.stack(outs).sum(0).reshape(z, block.mul * block.dim) if outs else x1.new_zeros(z, block.mul * block.dim)
            for outs, block in zip(outputs, self.out_blocks)
        ]
        return torch.cat(result, dim=1) if result else x1.new_zeros(z, 0)


def _block(x: torch.Tensor, block: _Block) -> torch.Tensor:
    """The columns of one irreps block of ``x [Z, dim]`` as ``[Z, mul, dim_ir]``."""
    return x[:, block.start : block.start + block.mul * block.dim].reshape(x.shape[0], block.mul, block.dim)
