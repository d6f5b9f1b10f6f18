"""Backend ``cg``: the exact Clebsch-Gordan tensor product (every path, one weight block per path).

Weights use e3nn's flat layout (instruction order, each block row-major with the shapes of
:data:`~equitensor.ops.descriptor.WEIGHT_SHAPES`), so ``o3.TensorProduct`` weights can be
reused unchanged.
"""

from __future__ import annotations

import torch

from ... import so3
from .base import TensorProductBackend, instruction_paths

_EINSUM = {
    # (x1 [z,u,i], x2 [z,v,j], C [i,j,k]) -> products, then weights
    "uvw": ("zui,zvj,ijk->zuvk", "zuvk,zuvw->zwk", "zuvk,uvw->zwk"),
    "uvu": ("zui,zvj,ijk->zuvk", "zuvk,zuv->zuk", "zuvk,uv->zuk"),
    "uvv": ("zui,zvj,ijk->zuvk", "zuvk,zuv->zvk", "zuvk,uv->zvk"),
    "uuw": ("zui,zuj,ijk->zuk", "zuk,zuw->zwk", "zuk,uw->zwk"),
    "uuu": ("zui,zuj,ijk->zuk", "zuk,zu->zuk", "zuk,u->zuk"),
}
_UNWEIGHTED = {"uvu": "zuvk->zuk", "uvv": "zuvk->zvk", "uuu": "zuk->zuk"}


class CGBackend(TensorProductBackend):
    """Exact CG product, executed path by path with ``torch.einsum`` (reference method)."""

    def __init__(self, descriptor):
        super().__init__(descriptor)
        self.weight_numel = descriptor.weight_numel
        self.paths = instruction_paths(descriptor)
        for k, ins in enumerate(descriptor.instructions):
            l1, l2, lo = (ir.l for ir in descriptor.path_irreps(ins))
            self.add_table(f"cg_{k}", ins.coefficient * so3.wigner_3j(l1, l2, lo))

    def forward(self, x1, x2, weight):
        d = self.descriptor
        z = x1.shape[0]
        blocks1 = [x1[:, s].reshape(z, mul, ir.dim) for s, (mul, ir) in zip(d.irreps_in1.slices(), d.irreps_in1)]
        blocks2 = [x2[:, s].reshape(z, mul, ir.dim) for s, (mul, ir) in zip(d.irreps_in2.slices(), d.irreps_in2)]
        outputs = [[] for _ in d.irreps_out]
        for k, (ins, wslice) in enumerate(zip(d.instructions, d.weight_slices())):
            table = self.table(f"cg_{k}", x1)
            product_eq, per_sample_eq, shared_eq = _EINSUM[ins.mode]
            products = torch.einsum(product_eq, blocks1[ins.i_in1], blocks2[ins.i_in2], table)
            if ins.has_weight:
                if weight.ndim == 1:
                    w = weight[wslice].reshape(ins.weight_shape)
                    out = torch.einsum(shared_eq, products, w)
                else:
                    w = weight[:, wslice].reshape(z, *ins.weight_shape)
                    out = torch.einsum(per_sample_eq, products, w)
            else:
                out = torch.einsum(_UNWEIGHTED[ins.mode], products)
            outputs[ins.i_out].append(out)
        result = [
            torch.stack(outs).sum(0).reshape(z, mul * ir.dim) if outs else x1.new_zeros(z, mul * ir.dim)
            for outs, (mul, ir) in zip(outputs, d.irreps_out)
        ]
        return torch.cat(result, dim=1) if result else x1.new_zeros(z, 0)
