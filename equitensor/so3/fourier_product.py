"""Tables of the Gaunt product in Fourier space (``gaunt_fft``): pure numpy, float64.

Built on the exact SH <-> 2D Fourier change of basis of :mod:`equitensor.so3.fourier`; each
table is returned for all ``(lmax + 1)^2`` degree-major components, and ``rows`` (or ``columns``
for projections) selects the components of the blocks a product uses. The backend
(:mod:`equitensor.ops.backends.gaunt_fft`) only executes them.
"""

from __future__ import annotations

import numpy as np

from . import fourier


def _select(table: np.ndarray, rows, axis: int) -> np.ndarray:
    return table if rows is None else np.take(table, np.asarray(rows), axis=axis)


def even_fft_size(minimum: int) -> int:
    """Smallest even length >= ``minimum``: even so that ``phi + pi`` is a grid point (the fold);
    pocketfft handles any factorisation, and fewer samples beat smoother lengths at these sizes."""
    return minimum + (minimum % 2)


def folded_fourier_table(lmax: int, n: int, rows=None) -> np.ndarray:
    """``[sum d, (n/2 + 1) * (lmax + 1) * 2]``: ``A[j, v] = sum_u F[u, v] exp(i u theta_j)``, ``v >= 0``.

    The theta-axis inverse DFT of the exact Fourier coefficients, at ``theta_j = 2 pi j / n`` for
    ``j = 0..n/2`` only (the other half of the torus repeats the sphere, see :func:`folded_projection_table`).
    """
    f = _select(fourier.sh_to_fourier(lmax), rows, 0)[:, :, lmax:]  # [d, u, v>=0]
    theta = 2 * np.pi * np.arange(n // 2 + 1) / n
    phase = np.exp(1j * np.outer(theta, np.arange(-lmax, lmax + 1)))  # [j, u]
    a = np.einsum("ju,duv->djv", phase, f)
    return np.stack([a.real, a.imag], axis=-1).reshape(a.shape[0], -1)


def folded_projection_table(lmax_out: int, lmax_product: int, n: int, columns=None) -> np.ndarray:
    """``[(n//2 + 1) * (min(lmax_out, lmax_product) + 1) * 2, sum d_out]`` acting on the phi-rFFT ``H[j, v]`` of the product.

    ``c = Re sum_{u, v >= 0} G[u, v] K'[u, v]`` with ``G[u, v] = (1/n) sum_j H[j, v] exp(-i u theta_j)``
    gives ``K''[j, v] = (1/n) sum_u exp(-i u theta_j) K'[u, v]``, exact when ``n > 2 lmax_product``
    (no theta frequency of the product aliases). On the torus, ``(2 pi - theta, phi + pi)`` is the
    same point of the sphere as ``(theta, phi)``, so ``H[n - j, v] = (-1)^v H[j, v]`` and row
    ``n - j`` folds onto row ``j``. ``n`` may be odd (then no row lies at ``theta = pi``).
    """
    lp = lmax_product
    vmax = min(lmax_out, lp)  # the product has no bin past lmax_product
    k = fourier.fourier_to_sh(lmax_out, lp)[:, lp : lp + vmax + 1]
    k = k * np.where(np.arange(vmax + 1) > 0, 2.0, 1.0)[None, :, None]
    k = _select(k, columns, 2)  # [u, v, d_out]
    theta = 2 * np.pi * np.arange(n) / n
    phase = np.exp(-1j * np.outer(theta, np.arange(-lp, lp + 1))) / n  # [j, u]
    kj = np.einsum("ju,uvd->jvd", phase, k)  # [n, v, d_out]
    paired = (n - 1) // 2  # rows j = 1..paired have a partner n - j; for even n, row n/2 (theta = pi) has none
    sign = (-1.0) ** np.arange(vmax + 1)
    folded = kj[: n // 2 + 1].copy()
    folded[1 : paired + 1] += sign[None, :, None] * kj[n - paired :][::-1]
    return np.stack([folded.real, -folded.imag], axis=2).reshape(-1, folded.shape[-1])


def torus_sample_tables(left: np.ndarray, back: np.ndarray, vmax_in: int, vmax_out: int, n: int):
    """Fold the phi-axis DFTs into the ``"fft"`` tables: the ``"dft"`` route's real tables.

    ``left [d, (n/2 + 1) * (vmax_in + 1) * 2]`` (theta rows already sampled, see
    :func:`folded_fourier_table`) becomes the samples ``[d, points]`` of the function on the half
    torus through :func:`equitensor.fourier.phi_synthesis`; ``back`` becomes ``[points, d_out]``
    through :func:`equitensor.fourier.phi_analysis`. The rows ``theta = 0`` and ``theta = pi``
    are the poles, where a function on the sphere does not depend on phi: each is kept as one
    point (its ``n`` samples are equal, and their projection weights are summed).
    """
    half = n // 2 + 1
    synthesis = fourier.phi_synthesis(vmax_in, n)
    samples = left.reshape(left.shape[0], half, -1) @ synthesis  # [d, j, k]
    analysis = fourier.phi_analysis(vmax_out, n)
    weights = np.einsum("kc,jcd->jkd", analysis, back.reshape(half, analysis.shape[1], back.shape[1]))
    for pole in (0, half - 1):
        spread = np.abs(samples[:, pole] - samples[:, pole, :1]).max(initial=0.0)
        assert spread < 1e-12 * max(1.0, np.abs(samples).max()), "a pole sample depends on phi"
    left_points = np.concatenate(
        [samples[:, 0, :1], samples[:, 1:-1].reshape(samples.shape[0], -1), samples[:, -1, :1]], axis=1
    )
    back_points = np.concatenate(
        [
            weights[0].sum(0, keepdims=True),
            weights[1:-1].reshape(-1, weights.shape[2]),
            weights[-1].sum(0, keepdims=True),
        ]
    )
    return left_points, back_points


def half_plane_fourier_table(lmax: int, rows=None) -> np.ndarray:
    """``[sum d, (2 lmax + 1) * (lmax + 1) * 2]``: coefficients ``v >= 0`` as (real, imag) pairs."""
    f = _select(fourier.sh_to_fourier(lmax), rows, 0)[:, :, lmax:]
    return np.stack([f.real, f.imag], axis=-1).reshape(f.shape[0], -1)


def full_plane_fourier_table(lmax: int, rows=None) -> np.ndarray:
    """``[sum d, (2 lmax + 1)^2 * 2]``: all coefficients as (real, imag) pairs."""
    f = _select(fourier.sh_to_fourier(lmax), rows, 0)
    return np.stack([f.real, f.imag], axis=-1).reshape(f.shape[0], -1)


def half_plane_projection_table(lmax_out: int, lmax_product: int, columns=None) -> np.ndarray:
    """``[(2 Lp + 1) * (min(lmax_out, Lp) + 1) * 2, sum d_out]``: ``c = Re sum_{v >= 0} G K'`` as a real GEMM.

    For a real function the terms ``v < 0`` are the conjugates of ``v > 0``, hence ``K' = 2 K`` for
    ``v > 0``; ``Re(G K') = G_re K'_re - G_im K'_im``.
    """
    vmax = min(lmax_out, lmax_product)  # the product has no bin past lmax_product
    k = fourier.fourier_to_sh(lmax_out, lmax_product)[:, lmax_product : lmax_product + vmax + 1]
    k = k * np.where(np.arange(vmax + 1) > 0, 2.0, 1.0)[None, :, None]
    k = _select(k, columns, 2)
    return np.stack([k.real, -k.imag], axis=2).reshape(-1, k.shape[-1])


def full_plane_projection_table(lmax_out: int, lmax_product: int, columns=None) -> np.ndarray:
    """``[(2 Lp + 1)^2 * 2, sum d_out]``: ``c = Re sum_{u,v} G K`` as a real GEMM."""
    k = _select(fourier.fourier_to_sh(lmax_out, lmax_product), columns, 2)
    return np.stack([k.real, -k.imag], axis=2).reshape(-1, k.shape[-1])


def convolution_scatter_index(lmax1: int, lmax2: int) -> np.ndarray:
    """Flat index of ``(u1 + u2, v1 + v2)`` in the ``(2 (L1 + L2) + 1)^2`` plane for each coefficient pair."""
    lp = lmax1 + lmax2
    n = 2 * lp + 1
    r1, r2 = np.arange(-lmax1, lmax1 + 1), np.arange(-lmax2, lmax2 + 1)
    u = (r1[:, None, None, None] + r2[None, None, :, None] + lp) * n
    v = r1[None, :, None, None] + r2[None, None, None, :] + lp
    return (u + v).reshape(-1)


def fft_adjoint_tables(left, right, back, l1: int, l2: int, vout: int) -> dict[str, np.ndarray]:
    """Adjoint tables of the ``"fft"`` route, with the conjugate-pair weights folded in.

    ``left [d1, rows * (l1 + 1) * 2]`` and ``right`` map to half spectra in phi that an ``irfft``
    turns into samples; ``back [rows * (vout + 1) * 2, d_out]`` reads the first ``vout + 1``
    bins of an ``rfft``. The phi length ``n`` must exceed ``2 max(l1, l2, vout)`` so that no
    Nyquist bin is involved: then the adjoint of ``irfft(norm="forward")`` is ``rfft`` with
    weight 2 on ``v > 0``, and the adjoint of ``rfft(norm="forward")`` is ``irfft(norm="backward")``
    with weight 1/2 on ``v > 0``.
    """
    rows = back.shape[0] // (2 * (vout + 1))
    rfft_adjoint = np.where(np.arange(vout + 1) > 0, 0.5, 1.0)
    back = back.reshape(rows, vout + 1, 2, back.shape[1]) * rfft_adjoint[None, :, None, None]

    def irfft_adjoint(table, lmax):
        weight = np.where(np.arange(lmax + 1) > 0, 2.0, 1.0)[None, None, :, None]
        return (table.reshape(table.shape[0], rows, lmax + 1, 2) * weight).reshape(table.shape[0], -1).T

    return {
        "left_adjoint": irfft_adjoint(left, l1),
        "right_adjoint": irfft_adjoint(right, l2),
        "back_adjoint": back.reshape(-1, back.shape[-1]).T,
    }
