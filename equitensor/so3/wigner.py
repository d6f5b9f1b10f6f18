"""Clebsch-Gordan / Wigner 3j coefficients and Wigner D matrices for real harmonics (pure numpy).

``wigner_3j(l1, l2, l3)`` equals ``e3nn.o3.wigner_3j`` of e3nn >= 0.5, phases included (its
real-to-complex change of basis carries a factor ``(-i)^l``). The tables are computed here from
exact SU(2) Clebsch-Gordan coefficients and never read from the installed e3nn, so they are the
same whatever e3nn is installed. e3nn 0.4.4 (mace-torch's pin) computed its tables by another
route and differs in the sign of 16 of the 111 blocks with l <= 5 (e.g. (1, 2, 2)); the ``e3nn``
adapter backend and ``equitensor.models.from_mace`` compare against the installed tables and
convert those signs.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np

from ._cache import read_only as _read_only
from .harmonics import spherical_harmonics


def e3nn_phase_convention() -> str:
    """``"0.5"``: the tables follow e3nn >= 0.5's phases, independently of the installed e3nn."""
    return "0.5"


def _su2_cg_coefficient(j1: int, m1: int, j2: int, m2: int, j3: int, m3: int) -> float:
    """Condon-Shortley Clebsch-Gordan coefficient <j1 m1 j2 m2 | j3 m3> (integer j), exact arithmetic."""
    if m3 != m1 + m2:
        return 0.0
    f = math.factorial
    prefactor = Fraction(
        (2 * j3 + 1) * f(j3 + j1 - j2) * f(j3 - j1 + j2) * f(j1 + j2 - j3) * f(j3 + m3) * f(j3 - m3),
        f(j1 + j2 + j3 + 1) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2),
    )
    vmin = max(-j1 + j2 + m3, -j1 + m1, 0)
    vmax = min(j2 + j3 + m1, j3 - j1 + j2, j3 + m3)
    total = Fraction(0)
    for v in range(vmin, vmax + 1):
        total += (-1) ** (v + j2 + m2) * Fraction(
            f(j2 + j3 + m1 - v) * f(j1 - m1 + v),
            f(v) * f(j3 - j1 + j2 - v) * f(j3 + m3 - v) * f(v + j1 - j2 - m3),
        )
    return math.sqrt(prefactor) * float(total)


@functools.cache
def su2_clebsch_gordan(l1: int, l2: int, l3: int) -> np.ndarray:
    """Complex-basis CG tensor ``[2l1+1, 2l2+1, 2l3+1]`` indexed by ``m + l``."""
    mat = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    if abs(l1 - l2) <= l3 <= l1 + l2:
        for m1 in range(-l1, l1 + 1):
            for m2 in range(-l2, l2 + 1):
                if abs(m1 + m2) <= l3:
                    mat[l1 + m1, l2 + m2, l3 + m1 + m2] = _su2_cg_coefficient(l1, m1, l2, m2, l3, m1 + m2)
    return _read_only(mat)


@functools.cache
def change_basis_real_to_complex(l: int) -> np.ndarray:
    """Unitary ``Q [2l+1, 2l+1]`` with ``Y_complex = Q @ Y_real`` in e3nn's phase convention."""
    q = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    s = 1 / math.sqrt(2)
    for m in range(-l, 0):
        q[l + m, l + abs(m)] = s
        q[l + m, l - abs(m)] = -1j * s
    q[l, l] = 1
    for m in range(1, l + 1):
        q[l + m, l + abs(m)] = (-1) ** m * s
        q[l + m, l - abs(m)] = 1j * (-1) ** m * s
    q = (-1j) ** l * q  # e3nn >= 0.5's phase; makes every wigner_3j block real
    return _read_only(q)


def triangle(l1: int, l2: int, l3: int) -> bool:
    """Whether ``l3`` is in ``|l1 - l2| .. l1 + l2``."""
    return abs(l1 - l2) <= l3 <= l1 + l2


@functools.cache
def wigner_3j(l1: int, l2: int, l3: int) -> np.ndarray:
    """Real Wigner 3j tensor ``[2l1+1, 2l2+1, 2l3+1]`` with Frobenius norm 1 (e3nn's ``wigner_3j``).

    Invariant: ``C[i,j,k] = D1[i,a] D2[j,b] D3[k,c] C[a,b,c]`` for every rotation.
    Raises ``ValueError`` if the triangle rule fails.
    """
    if min(l1, l2, l3) < 0 or not triangle(l1, l2, l3):
        raise ValueError(
            f"wigner_3j({l1}, {l2}, {l3}): degrees violate the triangle rule |l1-l2| <= l3 <= l1+l2"
        )
    q1, q2, q3 = (change_basis_real_to_complex(l) for l in (l1, l2, l3))
    c = np.einsum("ij,kl,mn,ikn->jlm", q1, q2, np.conj(q3.T), su2_clebsch_gordan(l1, l2, l3))
    if np.abs(c.imag).max() > 1e-10:
        raise AssertionError(f"wigner_3j({l1},{l2},{l3}) is not real; the phase convention is broken")
    c = c.real
    return _read_only(c / np.linalg.norm(c))


#: Wigner 3j entries below this magnitude are float64 round-off of exact zeros (selection rules).
WIGNER_3J_ZERO = 1e-12


@functools.cache
def wigner_3j_nonzero(l1: int, l2: int, l3: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The entries of :func:`wigner_3j` that are not zero: ``(i, j, k, values)``, row-major order.

    ``i, j, k`` are int64 index arrays ``[nnz]`` into ``[2l1+1, 2l2+1, 2l3+1]`` and ``values
    [nnz]`` the coefficients; entries below :data:`WIGNER_3J_ZERO` are left out.
    """
    c = wigner_3j(l1, l2, l3)
    i, j, k = np.nonzero(np.abs(c) > WIGNER_3J_ZERO)
    return tuple(_read_only(a) for a in (i.astype(np.int64), j.astype(np.int64), k.astype(np.int64), c[i, j, k]))


def clebsch_gordan(l1: int, l2: int, l3: int) -> np.ndarray:
    """Real CG coefficients ``sqrt(2l3+1) * wigner_3j``: an isometry from l1 ⊗ l2 onto l3."""
    return _read_only(math.sqrt(2 * l3 + 1) * wigner_3j(l1, l2, l3))


@functools.cache
def _sample_points(l: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234 + l)
    points = rng.normal(size=(4 * (2 * l + 1), 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    y = spherical_harmonics(l, points, normalization="integral")
    return points, np.linalg.pinv(y)


def wigner_D_from_matrix(l: int, rotation: np.ndarray, parity: int = 1) -> np.ndarray:
    """Representation matrix ``[2l+1, 2l+1]`` of the orthogonal 3x3 matrix ``rotation``.

    For a proper rotation R, ``Y_l(R x) = D(R) Y_l(x)``. For an improper matrix ``-R`` the
    representation of an irrep with parity ``p`` is ``p * D(R)``. Built by least squares on
    harmonics sampled at fixed points (exact to round-off); meant for tests, not hot paths.
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    det = np.linalg.det(rotation)
    if abs(abs(det) - 1) > 1e-8:
        raise ValueError(f"rotation must be orthogonal, got det = {det}")
    sign = 1.0
    if det < 0:
        rotation, sign = -rotation, float(parity)
    points, pinv = _sample_points(l)
    rotated = spherical_harmonics(l, points @ rotation.T, normalization="integral")
    return sign * (pinv @ rotated).T


def random_rotation(rng: np.random.Generator, improper: bool = False) -> np.ndarray:
    """Haar-random 3x3 rotation; with ``improper=True`` it is multiplied by -1 (adds inversion)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if improper else q
