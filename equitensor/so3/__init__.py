"""Pure SO(3) math: real spherical harmonics, Wigner 3j / Clebsch-Gordan, Gaunt coefficients,
Wigner D matrices, sphere grids and Fourier tables. numpy only (no torch): every table is built
in float64 once and cached; consumers convert to their dtype/device.
"""

from . import cp, fourier, fourier_product, s2grid
from .gaunt import gaunt_coefficients, gaunt_scale, wigner_3j_m0
from .harmonics import normalization_factor, spherical_harmonics, spherical_harmonics_alpha_beta
from .wigner import (
    clebsch_gordan,
    e3nn_phase_convention,
    random_rotation,
    triangle,
    wigner_3j,
    wigner_3j_nonzero,
    wigner_D_from_matrix,
)

__all__ = [
    "cp",
    "fourier",
    "fourier_product",
    "s2grid",
    "clebsch_gordan",
    "e3nn_phase_convention",
    "gaunt_coefficients",
    "gaunt_scale",
    "normalization_factor",
    "random_rotation",
    "spherical_harmonics",
    "spherical_harmonics_alpha_beta",
    "triangle",
    "wigner_3j",
    "wigner_3j_m0",
    "wigner_3j_nonzero",
    "wigner_D_from_matrix",
]
