"""Sphere grids with exact quadrature: Gauss-Legendre in ``cos(beta)`` x uniform in ``alpha`` (pure numpy).

Angles follow e3nn (see :mod:`equitensor.so3.harmonics`): ``beta`` is the polar angle from the
``y`` axis, ``alpha`` the azimuth about it. A grid with ``res_beta`` Gauss-Legendre nodes and
``res_alpha`` uniform azimuths integrates every polynomial on the sphere of degree
``<= min(2 * res_beta - 1, res_alpha - 1)`` exactly, in particular the product of three
spherical harmonics of degrees ``l1 + l2 + l3 <= that degree``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ._cache import read_only as _read_only
from .harmonics import spherical_harmonics_alpha_beta


def exact_resolution(degree: int) -> tuple[int, int]:
    """Smallest ``(res_beta, res_alpha)`` that integrates polynomials of ``degree`` exactly.

    For a product ``Y_l1 * Y_l2`` projected on ``Y_l3`` pass ``degree = l1 + l2 + l3``.
    """
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    return max(1, math.ceil((degree + 1) / 2)), degree + 1


def check_resolution(res_beta: int, res_alpha: int, degree: int) -> None:
    """Raise ``ValueError`` if the grid cannot integrate polynomials of ``degree`` exactly."""
    need_beta, need_alpha = exact_resolution(degree)
    if res_beta < need_beta or res_alpha < need_alpha:
        raise ValueError(
            f"grid resolution (res_beta={res_beta}, res_alpha={res_alpha}) is too coarse: integrating "
            f"degree {degree} exactly needs res_beta >= {need_beta} and res_alpha >= {need_alpha}"
        )


@functools.cache
def gauss_legendre_grid(res_beta: int, res_alpha: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes and weights of the product grid.

    Returns:
        ``beta [res_beta]`` (polar angles, ascending cos), ``alpha [res_alpha]`` (``2 pi k / res_alpha``)
        and ``weights [res_beta, res_alpha]`` with ``sum(weights) = 4 pi`` so that
        ``∫ f dΩ = sum(weights * f(beta, alpha))``.
    """
    if res_beta < 1 or res_alpha < 1:
        raise ValueError(f"grid resolution must be positive, got ({res_beta}, {res_alpha})")
    cos_beta, gl_weights = np.polynomial.legendre.leggauss(res_beta)
    beta = np.arccos(cos_beta)
    alpha = 2 * np.pi * np.arange(res_alpha) / res_alpha
    weights = gl_weights[:, None] * np.full(res_alpha, 2 * np.pi / res_alpha)[None, :]
    return _read_only(beta), _read_only(alpha), _read_only(weights)


@functools.cache
def harmonics_on_grid(lmax: int, res_beta: int, res_alpha: int) -> np.ndarray:
    """Orthonormal real harmonics of degrees ``0..lmax`` at the grid points.

    Returns:
        ``[res_beta * res_alpha, (lmax + 1)^2]`` (points flattened beta-major, degrees
        concatenated ``l = 0..lmax``, each ``m = -l..l``).
    """
    beta, alpha, _ = gauss_legendre_grid(res_beta, res_alpha)
    y = spherical_harmonics_alpha_beta(list(range(lmax + 1)), alpha[None, :], beta[:, None], "integral")
    return _read_only(y.reshape(res_beta * res_alpha, (lmax + 1) ** 2))


@functools.cache
def projection_on_grid(lmax: int, res_beta: int, res_alpha: int) -> np.ndarray:
    """Quadrature-weighted harmonics: ``coeffs = values @ P`` projects grid values on ``Y_0..Y_lmax``.

    Returns:
        ``P [res_beta * res_alpha, (lmax + 1)^2]`` with ``P[k, lm] = w_k Y_lm(point_k)``; exact for
        functions of degree ``<= min(2 res_beta - 1, res_alpha - 1) - lmax``.
    """
    _, _, weights = gauss_legendre_grid(res_beta, res_alpha)
    return _read_only(harmonics_on_grid(lmax, res_beta, res_alpha) * weights.reshape(-1, 1))
