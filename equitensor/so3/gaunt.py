"""Gaunt coefficients: integrals of three real (orthonormal) spherical harmonics (pure numpy).

``G[l1 l2 l3][m1, m2, m3] = ∫ Y_l1m1 Y_l2m2 Y_l3m3 dΩ = c(l1, l2, l3) * wigner_3j(l1, l2, l3)`` with
``c = sqrt((2l1+1)(2l2+1)(2l3+1) / 4π) * |(l1 l2 l3; 0 0 0)|``; zero when ``l1 + l2 + l3`` is odd.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .wigner import triangle, wigner_3j


def wigner_3j_m0(l1: int, l2: int, l3: int) -> float:
    """The Wigner 3j symbol ``(l1 l2 l3; 0 0 0)`` (closed form, exact up to round-off)."""
    if not triangle(l1, l2, l3):
        return 0.0
    big_l = l1 + l2 + l3
    if big_l % 2:
        return 0.0
    g = big_l // 2
    f = math.factorial
    value = math.sqrt(f(big_l - 2 * l1) * f(big_l - 2 * l2) * f(big_l - 2 * l3) / f(big_l + 1))
    value *= f(g) / (f(g - l1) * f(g - l2) * f(g - l3))
    return (-1) ** g * value


def gaunt_scale(l1: int, l2: int, l3: int) -> float:
    """``c(l1, l2, l3)`` such that the Gaunt tensor is ``c * wigner_3j`` (0 for odd ``l1+l2+l3``)."""
    return math.sqrt((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) / (4 * math.pi)) * abs(
        wigner_3j_m0(l1, l2, l3)
    )


@functools.cache
def gaunt_coefficients(l1: int, l2: int, l3: int) -> np.ndarray:
    """Gaunt tensor ``[2l1+1, 2l2+1, 2l3+1]`` for orthonormal real harmonics in e3nn's convention."""
    out = gaunt_scale(l1, l2, l3) * wigner_3j(l1, l2, l3)
    out.setflags(write=False)
    return out
