"""Backend ``gaunt_grid``: the Gaunt tensor product on a sphere grid (Xie et al. 2025).

Each input (per channel) is the function ``f(r) = sum_lm x_lm Y_lm(r)`` with orthonormal real
harmonics; it is evaluated on a Gauss-Legendre (beta) x uniform (alpha) grid, the two functions
are multiplied pointwise and the product is projected back on ``Y_l3`` with the quadrature
weights. The grid integrates ``Y_l1 Y_l2 Y_l3`` exactly, so the result is exactly

    out_l3 = coefficient * sum_{l1, l2} gaunt(l1, l2, l3) · (w1 x1_l1) (w2 x2_l2)
           = coefficient * sum_{l1, l2} gaunt_scale(l1, l2, l3) * w3j-contraction,

i.e. ``gaunt_scale(l1, l2, l3)`` times the ``cg`` path with e3nn's coefficient, and zero for
odd ``l1 + l2 + l3``. Semantics, units, modes and the weight layout are those of
:mod:`equitensor.ops.backends.factorized`.

Options:
    resolution: ``(res_beta, res_alpha)`` used for every product, or ``None`` (default) for the
        smallest exact grid of each product, ``res_beta = ceil((l1max + l2max + lout + 1) / 2)``,
        ``res_alpha = l1max + l2max + lout + 1``. A resolution too coarse for the requested
        degrees raises ``ValueError`` (it would silently approximate).
    allow_subset: drop (with a warning) requested couplings with odd ``l1 + l2 + l3`` instead
        of raising ``ValueError``.

Execution: two dense GEMMs against the sampled harmonics (``[sum d, grid]``) and one against
the weighted harmonics (``[grid, sum d_out]``); at the sizes of interest (grid <= ~1000 points)
a GEMM beats an FFT along alpha on CPU, so no FFT is used.
"""

from __future__ import annotations

from ... import so3
from .factorized import FactorizedBackend, ProductUnit


class GauntGridBackend(FactorizedBackend):
    """Gaunt product by pointwise multiplication on an exact S2 quadrature grid."""

    backend_name = "gaunt_grid"

    def __init__(self, descriptor, resolution: tuple[int, int] | None = None, allow_subset: bool = False):
        if resolution is not None:
            if len(tuple(resolution)) != 2:
                raise ValueError(f"resolution must be (res_beta, res_alpha), got {resolution!r}")
            resolution = tuple(int(r) for r in resolution)
        self.resolution = resolution
        self.grid_sizes: list[tuple[int, int]] = []
        super().__init__(descriptor, allow_subset=allow_subset)

    def unit_tables(self, unit: ProductUnit):
        d = self.descriptor
        l1, l2, lo = self.unit_degrees(unit)
        degree = l1 + l2 + lo
        if self.resolution is None:
            res_beta, res_alpha = so3.s2grid.exact_resolution(degree)
        else:
            res_beta, res_alpha = self.resolution
            so3.s2grid.check_resolution(res_beta, res_alpha, degree)
        self.grid_sizes.append((res_beta, res_alpha))
        lmax = max(l1, l2, lo)
        values = so3.s2grid.harmonics_on_grid(lmax, res_beta, res_alpha)  # [grid, (lmax+1)^2]
        project = so3.s2grid.projection_on_grid(lmax, res_beta, res_alpha)
        left = values[:, self.degree_rows(d.irreps_in1, unit.blocks1)].T
        right = values[:, self.degree_rows(d.irreps_in2, unit.blocks2)].T
        back = project[:, self.degree_rows(d.irreps_out, unit.outputs)]
        return left, right, back
