"""Method ``dense``: with shared weights the product is one fixed bilinear map, so it runs as one
GEMM, ``out = (x1 ⊗ x2).reshape(Z, dim1 * dim2) @ M(w)``. Pure torch, any device,
differentiable to any order. Fits small multiplicities (one channel per irrep), where per-term
kernels are dominated by overhead.
"""

from __future__ import annotations

import numpy as np
import torch

from ...descriptor import TensorProductDescriptor
from .executor import Executor, weight_slot
from .sparse import term_list


class BilinearMatrix(Executor):
    """Shared weights: ``M(w) [dim1 * dim2, dim_out]`` assembled per call, then one GEMM.

    Every term of :func:`~.sparse.term_list` (CG entry x channel combination) is unrolled to an
    explicit ``(row, column, weight column, coefficient)``; ``M`` is one ``index_put`` of
    ``coefficient * w[weight column]``, so its gradient w.r.t. the weights is plain torch.
    """

    method = "dense"

    def __init__(self, descriptor: TensorProductDescriptor, instruction_ids):
        super().__init__()
        d = descriptor
        terms = term_list(d, instruction_ids)
        n_loop = np.prod(terms.counts, axis=1)  # [E] channel combinations of each CG entry
        entry = np.repeat(np.arange(len(n_loop)), n_loop)
        within = np.arange(entry.size) - np.repeat(np.cumsum(n_loop) - n_loop, n_loop)
        c1, c2 = terms.counts[entry, 1], terms.counts[entry, 2]
        steps = np.stack([within // (c1 * c2), (within // c2) % c1, within % c2], axis=1)  # [T, 3]
        cols = terms.base[entry] + np.einsum("tl,tls->ts", steps, terms.strides[entry])  # [T, 4] out,x1,x2,w
        self.dim1, self.dim2, self.dim_out = d.irreps_in1.dim, d.irreps_in2.dim, d.irreps_out.dim
        self.has_unweighted = terms.has_unweighted
        self.add_index("rows", cols[:, 1] * self.dim2 + cols[:, 2])
        self.add_index("columns", cols[:, 0])
        self.add_index("weight_columns", cols[:, 3])
        self.add_table("coef", terms.coef[entry])  # the coefficient of every matrix entry

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        if weight is not None and weight.ndim != 1:
            raise ValueError("cg backend: method='dense' needs shared weights (shared_weights=True)")
        device = x1.device
        w = weight_slot(weight, self.has_unweighted, x1)[0]
        values = self.table("coef", x1) * w[self.index("weight_columns", device)]
        matrix = x1.new_zeros(self.dim1 * self.dim2, self.dim_out).index_put(
            (self.index("rows", device), self.index("columns", device)), values, accumulate=True
        )
        outer = (x1[:, :, None] * x2[:, None, :]).reshape(x1.shape[0], self.dim1 * self.dim2)
        return outer @ matrix
