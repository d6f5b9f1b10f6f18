"""Product basis ``cg``: MACE's symmetric contraction with generalised Clebsch-Gordan coupling.

For every node, channel ``c`` and output irrep ``L`` (Batatia et al. 2022, eqs. 10-11)::

    B[c, L, M] = sum_{nu=1..correlation} sum_k  w[z, nu, L, k, c]  U_nu[M, i_1..i_nu, k]  x[c, i_1] ... x[c, i_nu]

with ``x [c, d]`` the node features of one channel over the coupling irreps (``d = sum(2l+1)``,
e.g. 16 for ``0e+1o+2e+3o``), ``U_nu`` the symmetric coupling basis of
:mod:`equitensor.so3.coupling` and ``w`` weights that depend on the element ``z`` and the channel.

Execution (all tables built once at construction):

1. products of ``x`` on the sorted monomials ``x_i1 x_i2 ... (i1 <= i2 <= ...)`` that the coupling
   uses, one level per order (``P_nu = P_{nu-1}[parent] * x[last]``), laid out
   ``[n_monomials, N*c]`` so that each gather copies whole rows;
2. one matmul of the coupling tables of every (L, nu) with all monomials:
   ``[sum_L (2L+1) K_L, n_monomials] @ [n_monomials, N*c] -> Q``;
3. per output irrep, the element-dependent weights (one-hot @ weights) contract ``k``.

This is the same function as mace-torch's ``SymmetricContraction`` (same weights layout
``[num_elements, K, channels]`` per order), written without the ``d^nu`` intermediates; the
coupling basis is the reduced, symmetric one, so ``K`` is the number of independent paths.
"""

from __future__ import annotations

import numpy as np
import torch

from ...so3.coupling import monomial_coupling
from .base import ProductBasisBackend


class SymmetricContractionBackend(ProductBasisBackend):
    """MACE's symmetric contraction (``cg`` product basis), exact and complete.

    Parameters ``weights["out{o}_nu{nu}"]``: ``[num_elements, K_{o,nu}, channels]`` for output
    block ``o`` and order ``nu`` (absent when no path exists), initialised ``randn / K`` as in MACE.
    """

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int):
        super().__init__(irreps_in, irreps_out, correlation, num_elements)
        coupling = tuple((ir.l, ir.p) for _, ir in self.irreps_in)
        d = sum(2 * l + 1 for l, _ in coupling)
        self.coupling_dim = d

        # (block o, nu) -> (monomials, table [n, M, K])
        tables = {
            (o, nu): monomial_coupling(coupling, (ir.l, ir.p), nu)
            for o, (_, ir) in enumerate(self.irreps_out)
            for nu in range(1, self.correlation + 1)
        }
        # monomials needed at each level: used ones plus parents of the next level's
        levels: dict[int, set[tuple[int, ...]]] = {nu: set() for nu in range(1, self.correlation + 1)}
        for (_, nu), (monos, table) in tables.items():
            if table.shape[-1]:
                levels[nu].update(map(tuple, monos.tolist()))
        for nu in range(self.correlation, 1, -1):
            levels[nu - 1].update(m[:-1] for m in levels[nu])
        levels[1] = {(i,) for i in range(d)}  # level 1 is x itself
        ordered = {nu: sorted(levels[nu]) for nu in levels}
        row_of, offset = {}, 0
        for nu in range(1, self.correlation + 1):
            for j, mono in enumerate(ordered[nu]):
                row_of[mono] = offset + j
            offset += len(ordered[nu])
        self.num_monomials = offset
        for nu in range(2, self.correlation + 1):
            position = {m: j for j, m in enumerate(ordered[nu - 1])}
            parent = [position[m[:-1]] for m in ordered[nu]]
            last = [m[-1] for m in ordered[nu]]
            self.register_buffer(f"parent_{nu}", torch.tensor(parent, dtype=torch.long), persistent=False)
            self.register_buffer(f"last_{nu}", torch.tensor(last, dtype=torch.long), persistent=False)

        # coupling matrix [n_monomials, sum_o M_o * K_o], block o laid out [M_o, K_o]
        self.blocks = []  # (o, M, K, column slice)
        columns = []
        self.weights = torch.nn.ParameterDict()
        paths = []
        start = 0
        for o, (mul, ir) in enumerate(self.irreps_out):
            m = ir.dim
            ks = [tables[(o, nu)][1].shape[-1] for nu in range(1, self.correlation + 1)]
            k_total = sum(ks)
            block = np.zeros((self.num_monomials, m, k_total))
            k0 = 0
            for nu, k in zip(range(1, self.correlation + 1), ks):
                monos, table = tables[(o, nu)]
                if k:
                    rows = [row_of[tuple(mono)] for mono in monos.tolist()]
                    block[rows, :, k0 : k0 + k] = table
                    weight = torch.randn(self.num_elements, k, self.num_channels) / k
                    self.weights[f"out{o}_nu{nu}"] = torch.nn.Parameter(weight)
                    paths.append((ir, nu, k))
                k0 += k
            columns.append(block.reshape(self.num_monomials, m * k_total))
            self.blocks.append((o, m, k_total, slice(start, start + m * k_total)))
            start += m * k_total
        self.paths = tuple(paths)
        self._coupling = np.ascontiguousarray(np.concatenate(columns, axis=1))  # float64 master
        self._coupling_cache: dict[tuple, torch.Tensor] = {}
        self._in_blocks = [(s, mul, ir.dim) for s, (mul, ir) in zip(self.irreps_in.slices(), self.irreps_in)]

    def coupling_matrix(self, like: torch.Tensor) -> torch.Tensor:
        """``[n_monomials, sum_o (2L+1) K_o]`` in ``like``'s dtype/device (cached from float64)."""
        key = (like.dtype, like.device)
        table = self._coupling_cache.get(key)
        if table is None:
            table = torch.as_tensor(self._coupling, dtype=like.dtype, device=like.device)
            self._coupling_cache[key] = table
        return table

    def forward(self, x: torch.Tensor, element_onehot: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], self.num_channels
        # [d, N*c]: coupling components first, so that gathering monomials copies whole rows
        blocks = torch.split(x, [mul * dim for _, mul, dim in self._in_blocks], dim=1)
        xs = torch.cat([b.reshape(n, mul, dim) for b, (_, mul, dim) in zip(blocks, self._in_blocks)], dim=2)
        xs = xs.permute(2, 0, 1).reshape(self.coupling_dim, n * c)
        products = [xs]
        for nu in range(2, self.correlation + 1):
            parent, last = getattr(self, f"parent_{nu}"), getattr(self, f"last_{nu}")
            products.append(products[-1].index_select(0, parent) * xs.index_select(0, last))  # [n_nu, N*c]
        monomials = torch.cat(products, dim=0) if len(products) > 1 else xs  # [n_monomials, N*c]
        q = self.coupling_matrix(x).T @ monomials  # [sum_o M_o K_o, N*c]
        q_blocks = torch.split(q, [m * k for _, m, k, _ in self.blocks], dim=0)
        outputs = []
        for (o, m, k_total, _), q_o in zip(self.blocks, q_blocks):
            if k_total == 0:
                outputs.append(x.new_zeros(n, c * m))
                continue
            w = torch.cat(
                [self.weights[f"out{o}_nu{nu}"] for nu in range(1, self.correlation + 1) if f"out{o}_nu{nu}" in self.weights],
                dim=1,
            )  # [E, K, c]
            w_node = (element_onehot @ w.reshape(self.num_elements, -1)).reshape(n, k_total, c)  # [N, K, c]
            q_o = q_o.reshape(m, k_total, n, c)  # [M, K, N, c]
            out = (q_o * w_node.transpose(0, 1)).sum(1)  # [M, N, c]
            outputs.append(out.permute(1, 2, 0).reshape(n, c * m))
        return torch.cat(outputs, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}, "
            f"monomials={self.num_monomials}, paths={[(str(ir), nu, k) for ir, nu, k in self.paths]}"
        )
