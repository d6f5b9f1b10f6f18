"""Real spherical harmonics in e3nn's convention (pure numpy, float64; the same in e3nn 0.4 and >= 0.5).

Convention (identical to ``e3nn.o3.spherical_harmonics``):

* the polar axis is ``y``: ``cos(theta) = y / r`` and the azimuth is ``phi = atan2(x, z)``;
* ``Y_lm = sqrt(2) N_lm P_l^|m|(cos theta) cos(m phi)`` for ``m > 0``,
  ``N_l0 P_l^0`` for ``m = 0`` and ``sqrt(2) N_l|m| P_l^|m| sin(|m| phi)`` for ``m < 0``,
  with ``P_l^m`` the associated Legendre functions *without* the Condon-Shortley phase and
  ``N_lm = sqrt((2l+1)/(4 pi) (l-m)!/(l+m)!)`` (orthonormal on the sphere);
* components are ordered ``m = -l..l``; for ``l = 1`` this is ``(x, y, z)`` up to the factor.

Normalisations: ``"integral"`` (orthonormal, ``∫ Y_lm^2 dΩ = 1``), ``"component"``
(``sum_m Y_lm(x)^2 = 2l+1`` on the unit sphere, ``= sqrt(4 pi) * integral``) and ``"norm"``
(``sum_m Y_lm(x)^2 = 1``).
"""

from __future__ import annotations

import math

import numpy as np

NORMALIZATIONS = ("integral", "component", "norm")


def normalization_factor(l: int, normalization: str) -> float:
    """Factor that turns orthonormal (``integral``) harmonics of degree ``l`` into ``normalization``."""
    if normalization == "integral":
        return 1.0
    if normalization == "component":
        return math.sqrt(4 * math.pi)
    if normalization == "norm":
        return math.sqrt(4 * math.pi / (2 * l + 1))
    raise ValueError(f"unknown normalization {normalization!r}; expected one of {NORMALIZATIONS}")


def normalized_legendre(lmax: int, cos_theta: np.ndarray, sin_theta: np.ndarray) -> np.ndarray:
    """``N_lm P_l^m(cos theta)`` for ``0 <= m <= l <= lmax`` (no Condon-Shortley phase).

    Computed with the standard stable recursion on the normalised functions.

    Args:
        lmax: highest degree.
        cos_theta, sin_theta: arrays of the same shape ``[...]``.

    Returns:
        array ``[lmax + 1, lmax + 1, ...]`` indexed ``[l, m]`` (zero for ``m > l``).
    """
    cos_theta = np.asarray(cos_theta, dtype=np.float64)
    sin_theta = np.asarray(sin_theta, dtype=np.float64)
    out = np.zeros((lmax + 1, lmax + 1) + cos_theta.shape)
    out[0, 0] = math.sqrt(1 / (4 * math.pi))
    for m in range(1, lmax + 1):
        out[m, m] = math.sqrt((2 * m + 1) / (2 * m)) * sin_theta * out[m - 1, m - 1]
    for m in range(0, lmax):
        out[m + 1, m] = math.sqrt(2 * m + 3) * cos_theta * out[m, m]
    for m in range(0, lmax + 1):
        for l in range(m + 2, lmax + 1):
            a = math.sqrt((4 * l * l - 1) / (l * l - m * m))
            b = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
            out[l, m] = a * (cos_theta * out[l - 1, m] - b * out[l - 2, m])
    return out


def spherical_harmonics_alpha_beta(
    ls: int | list[int], alpha: np.ndarray, beta: np.ndarray, normalization: str = "integral"
) -> np.ndarray:
    """Real spherical harmonics at angles (alpha = azimuth about y, beta = polar angle from y).

    The point is ``(x, y, z) = (sin beta sin alpha, cos beta, sin beta cos alpha)`` (e3nn's
    ``angles_to_xyz``).

    Args:
        ls: a degree or a list of degrees; the output concatenates them in that order.
        alpha, beta: broadcastable arrays ``[...]``.

    Returns:
        array ``[..., sum(2l + 1)]``.
    """
    ls = [ls] if isinstance(ls, int) else list(ls)
    alpha, beta = np.broadcast_arrays(np.asarray(alpha, np.float64), np.asarray(beta, np.float64))
    return _assemble(ls, alpha, np.cos(beta), np.sin(beta), normalization)


def spherical_harmonics(
    ls: int | list[int], xyz: np.ndarray, normalize: bool = True, normalization: str = "component"
) -> np.ndarray:
    """Real spherical harmonics of the vectors ``xyz`` (same values as ``e3nn.o3.spherical_harmonics``).

    Args:
        ls: a degree or list of degrees, concatenated in order.
        xyz: ``[..., 3]`` vectors.
        normalize: project the vectors on the unit sphere first; otherwise ``Y_l`` is scaled by
            ``|x|^l`` (the solid harmonics, as e3nn does).

    Returns:
        array ``[..., sum(2l + 1)]``.
    """
    ls = [ls] if isinstance(ls, int) else list(ls)
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.shape[-1:] != (3,):
        raise ValueError(f"xyz must have shape [..., 3], got {xyz.shape}")
    r = np.linalg.norm(xyz, axis=-1)
    safe_r = np.where(r > 0, r, 1.0)
    x, y, z = xyz[..., 0] / safe_r, xyz[..., 1] / safe_r, xyz[..., 2] / safe_r
    alpha = np.arctan2(x, z)
    sin_beta = np.sqrt(x * x + z * z)
    out = _assemble(ls, alpha, y, sin_beta, normalization)
    if not normalize:
        scales = np.concatenate([np.repeat(r[..., None] ** l, 2 * l + 1, axis=-1) for l in ls], axis=-1)
        out = out * scales
    return out


def _assemble(ls, alpha, cos_beta, sin_beta, normalization):
    lmax = max(ls) if ls else 0
    legendre = normalized_legendre(lmax, cos_beta, sin_beta)
    blocks = []
    for l in ls:
        factor = normalization_factor(l, normalization)
        comps = []
        for m in range(-l, l + 1):
            if m > 0:
                comps.append(math.sqrt(2) * legendre[l, m] * np.cos(m * alpha))
            elif m < 0:
                comps.append(math.sqrt(2) * legendre[l, -m] * np.sin(-m * alpha))
            else:
                comps.append(legendre[l, 0])
        blocks.append(factor * np.stack(comps, axis=-1))
    if not blocks:
        return np.zeros(alpha.shape + (0,))
    return np.concatenate(blocks, axis=-1)
