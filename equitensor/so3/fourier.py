"""Exact change of basis between real spherical harmonics and 2D Fourier series on (theta, phi).

Convention: ``theta`` = e3nn's ``beta`` (polar angle from ``y``), ``phi`` = ``alpha``. Every real
``Y_lm(theta, phi)`` is a trigonometric polynomial

    Y_lm(theta, phi) = sum_{|u| <= l, v = ±m} F[lm, u, v] exp(i (u theta + v phi))

(``P_l^|m|(cos theta)`` is ``sin^|m| theta`` times a polynomial in ``cos theta``, and the phi
part is ``cos(m phi)`` or ``sin(|m| phi)``), so its coefficients are computed *exactly* (to
round-off) by a DFT of samples on an equispaced torus grid with more than ``2 l`` points per
axis: a DFT is exact for trigonometric polynomials that do not alias.

The way back integrates against ``sin(theta)`` on ``[0, pi] x [0, 2 pi)``; its table is built
in closed form from ``int_0^pi exp(i k theta) sin(theta) d theta`` (no quadrature).

Index layout of the tables: ``u`` and ``v`` run over ``-L..L`` stored at ``u + L``, ``v + L``.
"""

from __future__ import annotations

import functools

import numpy as np

from ._cache import read_only as _read_only
from .harmonics import spherical_harmonics_alpha_beta


@functools.cache
def sh_to_fourier(lmax: int) -> np.ndarray:
    """Fourier coefficients of the orthonormal real harmonics ``Y_0..Y_lmax``.

    Returns:
        complex ``F [(lmax + 1)^2, 2 lmax + 1, 2 lmax + 1]`` indexed ``[lm, u + lmax, v + lmax]``
        with ``Y_lm(theta, phi) = sum_{u,v} F[lm, u, v] exp(i (u theta + v phi))``.
    """
    n = 2 * lmax + 2  # > 2 lmax: no aliasing of frequencies |u|, |v| <= lmax
    angles = 2 * np.pi * np.arange(n) / n
    # theta runs over the whole circle: the formula (via cos/sin of theta) is the trigonometric
    # polynomial itself, so sampling past pi is what makes the DFT exact.
    samples = spherical_harmonics_alpha_beta(
        list(range(lmax + 1)), angles[None, :], angles[:, None], "integral"
    )
    coefficients = np.fft.fft2(np.moveaxis(samples, -1, 0), axes=(1, 2)) / (n * n)  # [lm, u mod n, v mod n]
    frequencies = np.arange(-lmax, lmax + 1) % n
    out = coefficients[:, frequencies][:, :, frequencies]
    out.real[np.abs(out.real) < 1e-15] = 0.0
    out.imag[np.abs(out.imag) < 1e-15] = 0.0
    return _read_only(out)


def _sin_weighted_exponential_integral(k: np.ndarray) -> np.ndarray:
    """``int_0^pi exp(i k theta) sin(theta) d theta`` for integer ``k`` (closed form)."""
    k = np.asarray(k)
    out = np.zeros(k.shape, dtype=np.complex128)
    regular = np.abs(k) != 1
    kr = k[regular].astype(np.float64)
    out[regular] = (1 + (-1.0) ** np.abs(k[regular])) / (1 - kr * kr)
    out[k == 1] = 1j * np.pi / 2
    out[k == -1] = -1j * np.pi / 2
    return out


@functools.cache
def fourier_to_sh(lmax_out: int, lmax_fourier: int) -> np.ndarray:
    """Projection of a 2D Fourier series on the real harmonics ``Y_0..Y_lmax_out``.

    For ``f(theta, phi) = sum_{|u|,|v| <= lmax_fourier} G[u, v] exp(i (u theta + v phi))``,

        int_S2 f Y_lm dΩ = sum_{u,v} G[u, v] K[u, v, lm]

    exactly, with ``K[u, v, lm] = 2 pi sum_u' F[lm, u', -v] S(u + u')`` and
    ``S(k) = int_0^pi exp(i k theta) sin(theta) d theta``.

    Returns:
        complex ``K [2 lmax_fourier + 1, 2 lmax_fourier + 1, (lmax_out + 1)^2]`` indexed
        ``[u + lmax_fourier, v + lmax_fourier, lm]``.
    """
    lf = lmax_fourier
    coefficients = sh_to_fourier(lmax_out)  # [lm, u', v']
    uu = np.arange(-lf, lf + 1)
    up = np.arange(-lmax_out, lmax_out + 1)
    s = _sin_weighted_exponential_integral(uu[:, None] + up[None, :])  # [u, u']
    # phi integral: 2 pi delta(v + v'); v' = -v must lie in -lmax_out..lmax_out
    f_minus_v = np.zeros((coefficients.shape[0], 2 * lmax_out + 1, 2 * lf + 1), dtype=np.complex128)
    for iv, v in enumerate(uu):
        if abs(v) <= lmax_out:
            f_minus_v[:, :, iv] = coefficients[:, :, lmax_out - v]
    k = 2 * np.pi * np.einsum("ua,lav->uvl", s, f_minus_v)
    return _read_only(k)


def fast_fft_size(minimum: int) -> int:
    """Smallest integer ``>= minimum`` whose prime factors are 2, 3 and 5 (fast FFT lengths)."""
    n = max(1, minimum)
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def batched_fft_size(minimum: int) -> int:
    """Smallest length ``>= minimum`` of the form ``2^k`` or ``3 * 2^k``.

    For many short real FFTs batched over a large leading dimension (the ``gaunt_fft`` route),
    torch's CPU FFT runs these lengths faster per element than the other 2,3,5-smooth lengths
    near them, so the padding costs less than the odd factors would
    (``benchmarks/cpu_execution.py --tasks fft`` times every length, writing
    ``benchmarks/results/fft_lengths.csv``).
    """
    power = 1
    while power < minimum:
        power *= 2
    three = 3 * power // 4  # 3 * 2^(k - 2), the only 3 * 2^j between power / 2 and power
    return three if power >= 4 and three >= minimum else power


@functools.cache
def phi_synthesis(vmax: int, n: int) -> np.ndarray:
    """Real matrix of the inverse real DFT along phi: ``g = c @ S`` (``irfft(c, n, norm="forward")``).

    Rows are the half spectrum ``v = 0..vmax`` as (real, imaginary) pairs, columns the samples
    ``phi_k = 2 pi k / n``: ``g_k = sum_v w_v Re(c_v exp(i v phi_k))`` with ``w_0 = 1`` and
    ``w_v = 2`` otherwise (the conjugate terms ``-v``), so ``vmax < n / 2`` is required.

    Returns:
        ``S [(vmax + 1) * 2, n]``.
    """
    if not 0 <= vmax < n / 2:
        raise ValueError(f"phi_synthesis needs 0 <= vmax < n / 2, got vmax={vmax}, n={n}")
    phase = np.outer(np.arange(vmax + 1), 2 * np.pi * np.arange(n) / n)  # [v, k]
    weight = np.where(np.arange(vmax + 1) > 0, 2.0, 1.0)[:, None]
    return _read_only(np.stack([weight * np.cos(phase), -weight * np.sin(phase)], axis=1).reshape(-1, n))


@functools.cache
def phi_analysis(vmax: int, n: int) -> np.ndarray:
    """Real matrix of the forward real DFT along phi: ``c = g @ A`` (``rfft(g, norm="forward")[:vmax + 1]``).

    Returns:
        ``A [n, (vmax + 1) * 2]`` with columns ``(v, real)``, ``(v, imaginary)`` of
        ``c_v = (1 / n) sum_k g_k exp(-i v phi_k)``.
    """
    if not 0 <= vmax <= n // 2:
        raise ValueError(f"phi_analysis needs 0 <= vmax <= n / 2, got vmax={vmax}, n={n}")
    phase = np.outer(2 * np.pi * np.arange(n) / n, np.arange(vmax + 1))  # [k, v]
    return _read_only(np.stack([np.cos(phase) / n, -np.sin(phase) / n], axis=2).reshape(n, -1))
