"""Product basis ``cueq``: MACE's symmetric contraction (the ``cg`` product basis) run by cuEquivariance.

Same parameters as ``cg`` (``weights["out{o}_nu{nu}"] [num_elements, K, channels]``, same
names, shapes and meaning), so a model converts between the two by copying its state dict. The
coupling is equitensor's own symmetric basis (:func:`equitensor.so3.coupling.monomial_coupling`,
e3nn >= 0.5 phases), written into one cuEquivariance segmented tensor product per order ``nu``
with subscripts ``w_a_b.._i+ab..iw`` and the channel mode ``u`` appended to every operand, the
form of cuEquivariance's own ``symmetric_contraction`` descriptor (its coupling basis differs
from ours, hence not used: its weights would not be ``cg``'s). The dense coefficient
``U[i1, .., i_nu, M, k]`` holds each sorted monomial's entry once (``x`` is commuting, so this is
the same polynomial as the symmetrised tensor).

Execution (``cuequivariance_torch.SegmentedPolynomial``): ``uniform_1d`` on CUDA with
``cuequivariance-ops-torch`` installed, ``naive`` (plain torch, any device, any derivative
order) elsewhere. The per-node weights are ``element_onehot @ weights`` as in ``cg``.
"""

from __future__ import annotations

import numpy as np
import torch

from ...so3.coupling import monomial_coupling
from .cueq import INSTALL_HINT, KeepsCuequivarianceConstants, MulIrToIrMul, block_shapes, polynomial_modules
from .symmetric_contraction import SymmetricContractionBackend

try:
    import cuequivariance as cue
except ImportError as error:  # pragma: no cover - the import of .cueq above fails first
    raise ImportError(INSTALL_HINT) from error


def order_polynomial(irreps_in, irreps_out, nu: int, channels: int):
    """``[w_nu, x] -> [out]`` for the order-``nu`` terms of every output block (ir_mul layout).

    ``w_nu``: one segment ``(K_{o,nu}, channels)`` per output block with paths (block order);
    ``x``: ``(d, channels)``; ``out``: ``(2L_o+1, channels)`` per block.
    """
    keys_in = tuple((ir.l, ir.p) for _, ir in irreps_in)
    d = sum(ir.dim for _, ir in irreps_in)
    modes = "abcdefgh"[:nu]
    stp = cue.SegmentedTensorProduct.from_subscripts(f"w_{'_'.join(modes)}_i+{modes}iw")
    for operand in range(1, nu + 1):
        stp.add_segment(operand, (d,))
    for _, ir in irreps_out:
        stp.add_segment(nu + 1, (ir.dim,))
    for o, (_, ir) in enumerate(irreps_out):
        monomials, table = monomial_coupling(keys_in, (ir.l, ir.p), nu)
        if table.shape[-1] == 0:
            continue
        dense = np.zeros((d,) * nu + table.shape[1:])
        dense[tuple(np.asarray(monomials).T)] = table
        stp.add_path(None, *(0,) * nu, o, c=dense)
    stp = stp.append_modes_to_all_operands("u", {"u": channels})
    return cue.SegmentedPolynomial(
        [stp.operands[0], stp.operands[1]],
        [stp.operands[-1]],
        [(cue.Operation([0] + [1] * nu + [2]), stp)],
    )


class CueqSymmetricContraction(KeepsCuequivarianceConstants, SymmetricContractionBackend):
    """The ``cg`` product basis (same parameters) executed by cuEquivariance.

    Option ``method`` of ``cg`` is not taken: the execution is cuEquivariance's (module docstring).
    """

    #: cuEquivariance's naive method runs products of at most 5 inputs (the weights and ``x``
    #: repeated ``correlation`` times)
    MAX_CORRELATION = 4

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int):
        if correlation > self.MAX_CORRELATION:
            raise ValueError(
                f"cueq product basis: correlation={correlation} is above {self.MAX_CORRELATION}, the most "
                "cuEquivariance's torch execution takes (weights and x repeated correlation times); "
                'use product_backend="cg" for higher body orders'
            )
        super().__init__(irreps_in, irreps_out, correlation, num_elements, method="naive")
        orders = range(1, self.correlation + 1)
        polynomial = cue.SegmentedPolynomial.stack(
            [order_polynomial(self.irreps_in, self.irreps_out, nu, self.num_channels) for nu in orders],
            [True, False, False],
        )
        self.naive, kernel = polynomial_modules(polynomial, "equitensor_cueq_symmetric_contraction")
        self.has_kernel = kernel is not None
        self.kernel = kernel if kernel is not None else torch.nn.Identity()
        self.keep_constants(self.naive, self.kernel)
        # the stacked weight operand runs over orders, then blocks: cg's parameters in that order
        self._order_major_names = [
            name
            for nu in orders
            for o in range(len(self.irreps_out))
            if (name := f"out{o}_nu{nu}") in self.weights
        ]
        self.to_ir_mul = MulIrToIrMul(block_shapes(self.irreps_in))
        self.to_mul_ir = MulIrToIrMul(block_shapes(self.irreps_out), inverse=True)

    def forward(self, x: torch.Tensor, element_onehot: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not self._order_major_names or n == 0:
            return x.new_zeros(n, self.irreps_out.dim) + 0 * x.sum()
        w = torch.cat([self.weights[name] for name in self._order_major_names], dim=1)  # [E, K, c]
        w_node = element_onehot @ w.reshape(self.num_elements, -1)  # [N, K*c]
        module = self.kernel if self.has_kernel and x.is_cuda else self.naive
        [out] = module([w_node, self.to_ir_mul(x)])
        return self.to_mul_ir(out)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}, paths={len(self.paths)}"
        )
