"""Vector spherical harmonics on S2 grids and the generalised Gaunt factors (pure numpy, cached).

Conventions are those of :mod:`equitensor.so3.harmonics` (orthonormal real ``Y_lm``, e3nn's axes
and ``m = -l..l`` order). For every degree ``l`` the two tangent vector harmonics are

* ``Psi_lm = grad_S Y_lm`` (the surface gradient on the unit sphere; curl-free, "electric"), and
* ``Phi_lm = r_hat x Psi_lm`` (divergence-free, "magnetic"); both vanish for ``l = 0``.

They are stored by their components along the orthonormal tangent frame ``(e_beta, e_alpha)``
of the grid point (the grid of :mod:`equitensor.so3.s2grid` has no point on the poles), so the
dot product of two tangent fields is the sum over the two components.

Products of coefficient vectors ``x1`` (degree ``l1``) and ``x2`` (degree ``l2``) lifted to the
sphere, projected back on ``Y_l3``, are proportional to e3nn's ``wigner_3j(l1, l2, l3)`` (Wigner-
Eckart: each product is a rotation-equivariant bilinear map and the coupling is unique):

* scalar x scalar, ``∫ Y_l1m1 Y_l2m2 Y_l3m3 = G_even(l1, l2, l3) * w3j`` (the Gaunt factor;
  zero unless ``l1 + l2 + l3`` is even);
* vector . vector, ``∫ (Phi_l1m1 . Psi_l2m2) Y_l3m3 = G_odd(l1, l2, l3) * w3j``, and
  ``Phi_l1 . Psi_l2 = r_hat . (Psi_l1 x Psi_l2)`` is a pseudoscalar: zero unless
  ``l1 + l2 + l3`` is odd.

Dividing by the factor turns the grid product into the Clebsch-Gordan path of either parity.
The integrands are polynomials of degree ``l1 + l2 + l3`` (even) and ``l1 + l2 + l3 - 1``
(odd: ``x . (grad f x grad g)`` with ``f, g`` the solid harmonics), so a grid exact for degree
``l1 + l2 + l3`` makes both exact.

Both integrands are even under inversion ``r -> -r``: ``Y_l(-r) = (-1)^l Y_l(r)``, and ``Psi_l``,
``Phi_l`` pick up ``(-1)^(l+1)`` and ``(-1)^l`` as 3D vectors, so ``Y_l1 Y_l2 Y_l3`` and
``(Phi_l1 . Psi_l2) Y_l3`` both get ``(-1)^(l1+l2+l3)`` resp. ``(-1)^(l1+l2+l3+1)``, that is ``+1``
on the paths they realise. A grid that contains every point's antipode with the same weight
(Gauss-Legendre nodes are symmetric in ``cos(beta)``; an even ``res_alpha`` maps ``alpha`` to
``alpha + pi``) therefore integrates them exactly on one point per antipodal pair with twice
the weight: :func:`hemisphere_tables`.
"""

from __future__ import annotations

import functools

import numpy as np

from ._cache import read_only as _read_only
from .harmonics import spherical_harmonics
from .s2grid import exact_resolution, gauss_legendre_grid, harmonics_on_grid, projection_on_grid
from .wigner import triangle, wigner_3j

#: a factor below this (relative to the Gaunt scale ~1) would mean the product cannot realise the path
_SMALLEST_FACTOR = 1e-9


@functools.cache
def solid_harmonic_gradient(l: int) -> np.ndarray:
    """Cartesian gradient of the solid harmonics ``S_lm(x) = |x|^l Y_lm(x / |x|)``.

    ``grad_j S_lm = sum_m' D[j, m, m'] S_(l-1)m'`` with ``D [3, 2l+1, 2l-1]`` (``j`` = x, y, z).
    ``grad`` is a vector operator lowering the degree by one, so ``D`` is ``c_l`` times
    ``wigner_3j(1, l-1, l)``; ``c_l`` follows from Euler's identity ``x . grad S_l = l S_l``,
    fitted at random points (the residual is checked, so a convention mismatch raises).
    """
    if l < 1:
        raise ValueError(f"the gradient of a degree-0 harmonic is zero; got l={l}")
    rng = np.random.default_rng(7 + l)
    points = rng.normal(size=(4 * l + 8, 3))
    s_l = spherical_harmonics(l, points, normalize=False, normalization="integral")
    s_lower = spherical_harmonics(l - 1, points, normalize=False, normalization="integral")
    w3j = wigner_3j(1, l - 1, l)  # [3, 2l-1, 2l+1]
    euler = np.einsum("nj,jpm,np->nm", points, w3j, s_lower)  # x . (w3j S_(l-1))
    scale = l * np.vdot(euler, s_l) / np.vdot(euler, euler)
    residual = np.abs(scale * euler - l * s_l).max() / np.abs(l * s_l).max()
    if residual > 1e-10:
        raise AssertionError(f"solid_harmonic_gradient({l}): not proportional to wigner_3j (residual {residual:.1e})")
    return _read_only(scale * np.transpose(w3j, (0, 2, 1)))


@functools.cache
def vector_harmonics_on_grid(lmax: int, res_beta: int, res_alpha: int) -> tuple[np.ndarray, np.ndarray]:
    """``Psi`` and ``Phi`` of degrees ``0..lmax`` at the points of the Gauss-Legendre grid.

    Returns:
        ``psi, phi`` each ``[2, res_beta * res_alpha, (lmax + 1)^2]``: components along
        ``(e_beta, e_alpha)`` (points beta-major as :func:`~equitensor.so3.s2grid.harmonics_on_grid`,
        degrees concatenated, ``m = -l..l``; the ``l = 0`` column is zero).
    """
    beta, alpha, _ = gauss_legendre_grid(res_beta, res_alpha)
    b, a = np.meshgrid(beta, alpha, indexing="ij")
    b, a = b.reshape(-1), a.reshape(-1)
    # e3nn's angles: x = (sin b sin a, cos b, sin b cos a); r_hat, e_beta, e_alpha orthonormal
    r_hat = np.stack([np.sin(b) * np.sin(a), np.cos(b), np.sin(b) * np.cos(a)], axis=-1)
    e_beta = np.stack([np.cos(b) * np.sin(a), -np.sin(b), np.cos(b) * np.cos(a)], axis=-1)
    e_alpha = np.stack([np.cos(a), np.zeros_like(a), -np.sin(a)], axis=-1)
    psi = np.zeros((2, len(b), (lmax + 1) ** 2))
    for l in range(1, lmax + 1):
        lower = spherical_harmonics(l - 1, r_hat, normalization="integral")  # [G, 2l-1]
        gradient = np.einsum("jmp,gp->gjm", solid_harmonic_gradient(l), lower)  # [G, 3, 2l+1]
        columns = slice(l * l, (l + 1) ** 2)
        # the radial part of the 3D gradient (l Y r_hat) has no tangent component
        psi[0, :, columns] = np.einsum("gjm,gj->gm", gradient, e_beta)
        psi[1, :, columns] = np.einsum("gjm,gj->gm", gradient, e_alpha)
    # r_hat x (p_b e_beta + p_a e_alpha) = s (p_b e_alpha - p_a e_beta), s = det[r_hat, e_beta, e_alpha]
    orientation = np.sign(np.einsum("gi,gi->g", np.cross(r_hat, e_beta), e_alpha))[None, :, None]
    phi = np.stack([-psi[1], psi[0]]) * orientation
    return _read_only(psi), _read_only(phi)


@functools.cache
def generalised_gaunt_factor(l1: int, l2: int, l3: int) -> float:
    """``G(l1, l2, l3)``: the grid product of the path's parity divided by ``wigner_3j(l1, l2, l3)``.

    ``l1 + l2 + l3`` even: scalar x scalar (the Gaunt factor, ``|G| = so3.gaunt_scale``);
    odd: ``Phi_l1 . Psi_l2`` projected on ``Y_l3``. Computed by exact quadrature and checked to be
    proportional to ``wigner_3j`` (``AssertionError`` otherwise).

    Raises:
        ValueError: the degrees break the triangle rule or the product vanishes for this path.
    """
    if not triangle(l1, l2, l3):
        raise ValueError(f"({l1}, {l2}, {l3}) violates the triangle rule |l1-l2| <= l3 <= l1+l2")
    tensor = grid_product_tensor(l1, l2, l3)
    w3j = wigner_3j(l1, l2, l3)
    factor = float(np.vdot(tensor, w3j))  # ||w3j|| = 1
    residual = np.abs(tensor - factor * w3j).max()
    if residual > 1e-11 * max(1.0, abs(factor)):
        raise AssertionError(f"grid product ({l1}, {l2}, {l3}) is not proportional to wigner_3j ({residual:.1e})")
    if abs(factor) < _SMALLEST_FACTOR:
        raise ValueError(f"the vector-harmonic product cannot realise the path ({l1}, {l2}, {l3}) (factor {factor:.1e})")
    return factor


def grid_product_tensor(l1: int, l2: int, l3: int) -> np.ndarray:
    """``[2l1+1, 2l2+1, 2l3+1]`` projection on ``Y_l3`` of the parity-matching product of two harmonics."""
    lmax = max(l1, l2, l3)
    res_beta, res_alpha = exact_resolution(l1 + l2 + l3)
    _, _, weights = gauss_legendre_grid(res_beta, res_alpha)
    y = harmonics_on_grid(lmax, res_beta, res_alpha)
    cols = [slice(l * l, (l + 1) ** 2) for l in (l1, l2, l3)]
    project = y[:, cols[2]] * weights.reshape(-1, 1)
    if (l1 + l2 + l3) % 2 == 0:
        return np.einsum("ga,gb,gc->abc", y[:, cols[0]], y[:, cols[1]], project)
    psi, phi = vector_harmonics_on_grid(lmax, res_beta, res_alpha)
    return np.einsum("kga,kgb,gc->abc", phi[:, :, cols[0]], psi[:, :, cols[1]], project)


def antipodal_resolution(degree: int) -> tuple[int, int]:
    """Smallest exact ``(res_beta, res_alpha)`` for ``degree`` whose grid holds every point's antipode
    (``res_alpha`` rounded up to even), so :func:`hemisphere_tables` can halve it."""
    res_beta, res_alpha = exact_resolution(degree)
    return res_beta, res_alpha + res_alpha % 2


@functools.cache
def hemisphere_points(res_beta: int, res_alpha: int) -> tuple[np.ndarray, np.ndarray]:
    """One grid point per antipodal pair: ``indices [H]`` (into the beta-major points) and their
    quadrature multiplicity ``[H]``.

    With an even ``res_alpha`` the point ``(beta_i, alpha_j)`` has its antipode
    ``(pi - beta_i, alpha_j + pi)`` on the grid: the rows ``i < res_beta // 2`` and, for an odd
    ``res_beta``, the first half of the equator row hold one of each pair (multiplicity 2, ``H`` =
    half the grid). An odd ``res_alpha`` has no antipodes on the grid: every point, multiplicity 1.
    """
    points = np.arange(res_beta * res_alpha).reshape(res_beta, res_alpha)
    if res_alpha % 2:
        return _read_only(points.reshape(-1)), _read_only(np.ones(res_beta * res_alpha))
    half = [points[: res_beta // 2].reshape(-1)]
    if res_beta % 2:
        half.append(points[res_beta // 2, : res_alpha // 2])
    indices = np.concatenate(half)
    return _read_only(indices), _read_only(np.full(len(indices), 2.0))


@functools.cache
def hemisphere_tables(lmax: int, res_beta: int, res_alpha: int) -> dict[str, np.ndarray]:
    """Signals and projection of degrees ``0..lmax`` on :func:`hemisphere_points`.

    Exact for integrands even under inversion (every product the ``vsh`` backend projects; see
    the module docstring) whose degree the full grid integrates exactly.

    Returns:
        ``scalar [H, (lmax+1)^2]`` (``Y``), ``psi``/``phi [2, H, (lmax+1)^2]`` (tangent components as
        :func:`vector_harmonics_on_grid`) and ``project [H, (lmax+1)^2]`` (``Y`` times quadrature
        weight times multiplicity), degrees concatenated, ``m = -l..l``.
    """
    indices, multiplicity = hemisphere_points(res_beta, res_alpha)
    psi, phi = vector_harmonics_on_grid(lmax, res_beta, res_alpha)
    project = projection_on_grid(lmax, res_beta, res_alpha)[indices] * multiplicity[:, None]
    return {
        "scalar": _read_only(harmonics_on_grid(lmax, res_beta, res_alpha)[indices]),
        "psi": _read_only(psi[:, indices]),
        "phi": _read_only(phi[:, indices]),
        "project": _read_only(project),
    }
