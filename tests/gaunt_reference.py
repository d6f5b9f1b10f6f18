"""Reference routes that live in the tests only: the Gaunt product by the literal 2D FFT.

:class:`GauntFFT2Reference` computes the ``gaunt_fft`` backend's function by the route of Luo et
al. as written in the paper: the half-plane Fourier coefficients of both inputs (exact tables of
:mod:`equitensor.so3.fourier_product`) are zero-padded onto a full ``n x n`` torus
(``n >= 2 (L1 + L2) + 1``, so the linear convolution does not wrap around), sampled by
``irfft2``, multiplied pointwise, transformed back by ``rfft2`` and projected onto harmonics.
It shares the library's weight layout and planner (:class:`~equitensor.ops.backends.factorized.FactorizedBackend`)
but none of its execution routes (``dft``'s folded half-torus tables, ``fft``'s 1D transforms
and hand-written adjoints, ``direct``'s scatter), so agreement with them is a check of those
routes. Tests reach it as the backend :data:`REFERENCE_NAME` through the fixture
:func:`gaunt_fft2_reference`, which registers it for the duration of one test.
"""

from __future__ import annotations

import pytest
import torch

from equitensor import so3
from equitensor.ops.backends.factorized import FactorizedBackend, ProductUnit
from equitensor.ops.backends.gaunt_fft import (
    GauntFFTBackend, RoutePlan, empty_batch_product, torus_crop, torus_pad,
)
from equitensor.ops.backends.registry import TENSOR_PRODUCTS
from equitensor.so3 import fourier_product

REFERENCE_NAME = "gaunt_fft2_reference"


class GauntFFT2Reference(GauntFFTBackend):
    """``gaunt_fft``'s product with every unit through ``irfft2`` -> product -> ``rfft2``."""

    backend_name = REFERENCE_NAME

    def __init__(self, descriptor, allow_subset: bool = False):
        self.method = "fft2"
        self.unit_plans: list[RoutePlan] = []
        FactorizedBackend.__init__(self, descriptor, allow_subset=allow_subset)

    def unit_tables(self, unit: ProductUnit):
        d = self.descriptor
        l1, l2, lo = self.unit_degrees(unit)
        lp = l1 + l2
        left = fourier_product.half_plane_fourier_table(l1, self.degree_rows(d.irreps_in1, unit.blocks1))
        right = fourier_product.half_plane_fourier_table(l2, self.degree_rows(d.irreps_in2, unit.blocks2))
        back = fourier_product.half_plane_projection_table(lo, lp, self.degree_rows(d.irreps_out, unit.outputs))
        n = so3.fourier.fast_fft_size(2 * lp + 1)
        self.unit_plans.append(RoutePlan("fft2", l1, l2, lo, n=n))
        return left, right, back

    def is_pointwise(self, k):
        return False

    def combine(self, k, f1, f2):
        plan = self.unit_plans[k]
        l1, l2, lp, lo, n = plan.l1, plan.l2, plan.lp, plan.lo, plan.n
        if 0 in torch.broadcast_shapes(f1.shape[:-1], f2.shape[:-1]):  # MKL's FFT rejects empty batches
            return empty_batch_product(f1, f2, self.unit_constants[k].master("back").shape[0])
        c1 = torch.view_as_complex(f1.reshape(*f1.shape[:-1], 2 * l1 + 1, l1 + 1, 2).contiguous())
        c2 = torch.view_as_complex(f2.reshape(*f2.shape[:-1], 2 * l2 + 1, l2 + 1, 2).contiguous())
        # norm="forward": the inverse transform is the plain sum sum_uv G e^{i(u theta + v phi)}
        g1 = torch.fft.irfft2(torus_pad(c1, n, n // 2 + 1), s=(n, n), norm="forward")
        g2 = torch.fft.irfft2(torus_pad(c2, n, n // 2 + 1), s=(n, n), norm="forward")
        spectrum = torch.fft.rfft2(g1 * g2, norm="forward")
        return torch.view_as_real(torus_crop(spectrum, lp, min(lo, lp))).flatten(-3)


@pytest.fixture
def gaunt_fft2_reference(monkeypatch):
    """Register :class:`GauntFFT2Reference` as ``backend=REFERENCE_NAME`` for one test."""
    monkeypatch.setitem(TENSOR_PRODUCTS.registered, REFERENCE_NAME, GauntFFT2Reference)
    return REFERENCE_NAME
