"""Backend ``cp``: low-rank (CP) shared-path Clebsch-Gordan product (Tensor Decomposition Networks).

The shared-path CG tensor ``M`` over all degrees up to ``L`` (every path's ``wigner_3j`` block
with weight 1; ``L`` = the highest degree among the three irreps) is replaced by its rank-``R``
CP decomposition (:func:`equitensor.so3.cp.cp_factors`), so that per channel

    z = C ((A^T x) * (B^T y)),      cost O(d R) instead of O(d^3), d = (L + 1)^2.

Parity: paths between natural-parity irreps (0e, 1o, 2e, ...) have ``l1 + l2 + l3`` even and use
``M_even``; couplings that produce pseudo-tensors (e.g. 1o x 1o -> 1e) have an odd sum and use
``M_odd`` — the planner of :mod:`equitensor.ops.backends.factorized` runs each parity
combination separately, so ``cp`` realises every parity-allowed coupling (no path is lost, unlike
Gaunt). Weights and modes are those of :mod:`~equitensor.ops.backends.factorized` (one weight
per channel and degree on both inputs and the output).

Relation to ``cg``: at ``rank="full"`` (exact factors) the output equals the ``cg`` backend with
path weights ``w1[u, l1] * w2[v, l2] * w_out[u, l3]`` (the "shared-path" product with factorised
weights). At finite rank the error of one product is bounded by
``||out(Dx, Dy) - D out(x, y)|| <= 2 ||M_hat - M||_F ||x|| ||y||`` for any rotation/inversion ``D``
(with ``x, y`` the weighted inputs and the output before its coefficient and weights): see
:attr:`CPBackend.residual_norm` and :meth:`CPBackend.equivariance_error_bound`.

Options:
    rank: integer ``>= 1``, ``"default"`` (``7 L^2``, the TDN schedule) or ``"full"`` (exact).
    allow_subset: accepted for interface symmetry; ``cp`` realises every coupling.
"""

from __future__ import annotations

from ... import so3
from .factorized import FactorizedBackend, ProductUnit


class CPBackend(FactorizedBackend):
    """Rank-R CP approximation of the shared-path CG product."""

    backend_name = "cp"
    realises_odd_paths = True
    # a finite rank approximates the CG product (``relative_error``); ``rank="full"`` is exact
    exact = False
    analysis_options = {"rank": "full"}

    def __init__(self, descriptor, rank: int | str = "default", allow_subset: bool = False):
        d = descriptor
        self.lmax = max(
            [ir.l for _, ir in d.irreps_in1]
            + [ir.l for _, ir in d.irreps_in2]
            + [ir.l for _, ir in d.irreps_out]
        )
        if not (rank in ("default", "full") or (isinstance(rank, int) and not isinstance(rank, bool))):
            raise ValueError(f"rank must be an integer >= 1, 'default' (7 L^2) or 'full', got {rank!r}")
        if isinstance(rank, int) and rank < 1:
            raise ValueError(f"CP rank must be >= 1, got {rank}")
        self.requested_rank = rank
        self.factors: dict[str, so3.cp.CPFactors] = {}
        super().__init__(descriptor, allow_subset=allow_subset)

    def _factors(self, parity: str) -> so3.cp.CPFactors:
        if parity not in self.factors:
            self.factors[parity] = so3.cp.cp_factors(self.lmax, self.requested_rank, parity)
        return self.factors[parity]

    def unit_tables(self, unit: ProductUnit):
        d = self.descriptor
        f = self._factors("odd" if unit.odd_paths else "even")
        left = f.a[self.degree_rows(d.irreps_in1, unit.blocks1)]
        right = f.b[self.degree_rows(d.irreps_in2, unit.blocks2)]
        back = f.c[self.degree_rows(d.irreps_out, unit.outputs)].T
        return left, right, back

    @property
    def rank(self) -> int:
        """Rank of the factorisation in use (largest over the parity tensors used)."""
        return max((f.rank for f in self.factors.values()), default=0)

    @property
    def relative_error(self) -> float:
        """``||M_hat - M||_F / ||M||_F`` (largest over the parity tensors used)."""
        return max((f.relative_error for f in self.factors.values()), default=0.0)

    @property
    def residual_norm(self) -> float:
        """``||M_hat - M||_F`` (largest over the parity tensors used)."""
        return max((f.residual_norm for f in self.factors.values()), default=0.0)

    def equivariance_error_bound(self, x_norm: float, y_norm: float) -> float:
        """``2 ||M_hat - M||_F ||x|| ||y||``: bound on the equivariance error of one product."""
        return 2.0 * self.residual_norm * x_norm * y_norm

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", L={self.lmax}, rank={self.rank}, relative_error={self.relative_error:.2e}"
        )
