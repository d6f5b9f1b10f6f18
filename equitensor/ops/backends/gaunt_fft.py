"""Backend ``gaunt_fft``: the Gaunt tensor product through 2D Fourier series (Luo et al. 2024).

Same function as ``gaunt_grid`` (see there and :mod:`equitensor.ops.backends.factorized` for
semantics and the weight layout); only the route differs:

1. real harmonic coefficients -> 2D Fourier coefficients on (theta, phi) with the exact table
   :func:`equitensor.so3.fourier.sh_to_fourier` (frequencies ``|u| <= l``, ``|v| <= l``);
2. the product of the two functions is the *linear* 2D convolution of their coefficient arrays,
   computed by the convolution theorem on a zero-padded torus of ``n >= 2 (L1 + L2) + 1``
   points per axis (no wrap-around) or directly. The theta-axis DFT of the (2L + 1) non-zero
   frequencies is folded into the change-of-basis tables (an exact dense DFT), and since
   ``(2 pi - theta, phi + pi)`` is the same point of the sphere as ``(theta, phi)``, only the
   rows ``theta_j <= pi`` are computed (the other half is folded into the projection table with a
   ``(-1)^v`` phase). Routes:

   * ``"dft"`` (default for ``L1 + L2 > DIRECT_MAX_DEGREE``): the phi-axis DFTs are exact real
     matrices too (:func:`equitensor.so3.fourier.phi_synthesis`, :func:`~equitensor.so3.fourier.phi_analysis`)
     folded into the tables, so the route is GEMM -> pointwise product -> GEMM on the
     ``(n/2 - 1) n + 2`` samples of the half torus (each pole row is one sample: a function on
     the sphere does not depend on phi there). This is numerically the same computation as a
     quadrature on an equispaced grid, i.e. the ``gaunt_grid`` recipe with another grid and
     weights derived from the Fourier projection;
   * ``"fft"``: the phi axis goes through ``torch.fft.irfft`` / ``rfft`` (``n`` the smallest even
     2,3,5-smooth length, :data:`FFT_SIZE`) inside :class:`FFTUnitProduct`, whose backward pass
     calls the adjoint transforms directly;
   * ``"fft2"``: the literal zero-padded ``irfft2`` -> product -> ``rfft2`` on the full torus
     (reference route of Luo et al.);
   * ``"direct"``: the explicit convolution sum (outer product of the coefficient arrays,
     scattered onto ``u1 + u2, v1 + v2``);
3. Fourier -> harmonics with the exact projection table
   :func:`equitensor.so3.fourier.fourier_to_sh` (it integrates against ``sin(theta)``),
   truncated to the requested output degrees.

Real inputs have Hermitian coefficient arrays, so every route keeps only ``v >= 0``.

Options:
    method: ``"auto"`` (default), ``"dft"``, ``"fft"``, ``"fft2"`` or ``"direct"``. ``"auto"``
        takes ``"direct"`` when ``L1 + L2 <= DIRECT_MAX_DEGREE`` for the product at hand, else
        ``"dft"``: the faster route at every degree measured on CPU (float32, MIMO, batch 10^4,
        fwd+bwd, one thread; ms, grid / dft / fft / direct): L = 1: 2.9 / 2.9 / 22.9 / 48.4;
        L = 2: 5.6 / 9.6 / 46.5 / 429; L = 4: 31 / 28 / 101 / 5215. At these transform lengths
        (n <= ~40) a ``torch.fft`` call costs several times a GEMM against the DFT matrix; on
        hardware with fast batched FFTs (GPUs) ``"fft"`` may win and is worth measuring.
    allow_subset: drop (with a warning) couplings with odd ``l1 + l2 + l3`` instead of raising.
"""

from __future__ import annotations

import numpy as np
import torch

from ... import so3
from .factorized import FactorizedBackend, ProductUnit

#: ``method="auto"`` convolves directly when ``L1 + L2`` is at most this (see module docstring).
DIRECT_MAX_DEGREE = 0
METHODS = ("auto", "dft", "fft", "fft2", "direct")
#: transform length of the ``"fft"`` route for a minimum ``2 (L1 + L2) + 1`` (see module docstring).
FFT_SIZE = so3.fourier.fast_even_fft_size


def _even_fft_size(minimum: int) -> int:
    """Smallest even length >= ``minimum``: even so that ``phi + pi`` is a grid point (the fold);
    pocketfft handles any factorisation, and fewer samples beat smoother lengths at these sizes."""
    return minimum + (minimum % 2)


def folded_fourier_table(irreps, blocks, lmax: int, n: int) -> np.ndarray:
    """``[sum d, (n/2 + 1) * (lmax + 1) * 2]``: ``A[j, v] = sum_u F[u, v] exp(i u theta_j)``, ``v >= 0``.

    The theta-axis inverse DFT of the exact Fourier coefficients, at ``theta_j = 2 pi j / n`` for
    ``j = 0..n/2`` only (the other half of the torus repeats the sphere, see :func:`folded_projection_table`).
    """
    f = so3.fourier.sh_to_fourier(lmax)[FactorizedBackend.degree_rows(irreps, blocks)][
        :, :, lmax:
    ]  # [d, u, v>=0]
    theta = 2 * np.pi * np.arange(n // 2 + 1) / n
    phase = np.exp(1j * np.outer(theta, np.arange(-lmax, lmax + 1)))  # [j, u]
    a = np.einsum("ju,duv->djv", phase, f)
    return np.stack([a.real, a.imag], axis=-1).reshape(a.shape[0], -1)


def folded_projection_table(irreps, blocks, lmax_out: int, lmax_product: int, n: int) -> np.ndarray:
    """``[(n/2 + 1) * (lmax_out + 1) * 2, sum d_out]`` acting on the phi-rFFT ``H[j, v]`` of the product.

    ``c = Re sum_{u, v >= 0} G[u, v] K'[u, v]`` with ``G[u, v] = (1/n) sum_j H[j, v] exp(-i u theta_j)``
    gives ``K''[j, v] = (1/n) sum_u exp(-i u theta_j) K'[u, v]``. On the torus, ``(2 pi - theta, phi + pi)``
    is the same point of the sphere as ``(theta, phi)``, so ``H[n - j, v] = (-1)^v H[j, v]`` and row
    ``n - j`` folds onto row ``j``.
    """
    lp = lmax_product
    k = so3.fourier.fourier_to_sh(lmax_out, lp)[:, lp : lp + lmax_out + 1]
    k = k * np.where(np.arange(lmax_out + 1) > 0, 2.0, 1.0)[None, :, None]
    k = k[:, :, FactorizedBackend.degree_rows(irreps, blocks)]  # [u, v, d_out]
    theta = 2 * np.pi * np.arange(n) / n
    phase = np.exp(-1j * np.outer(theta, np.arange(-lp, lp + 1))) / n  # [j, u]
    kj = np.einsum("ju,uvd->jvd", phase, k)  # [n, v, d_out]
    half = n // 2
    sign = (-1.0) ** np.arange(lmax_out + 1)
    folded = kj[: half + 1].copy()
    folded[1:half] += sign[None, :, None] * kj[n - 1 : half : -1]
    return np.stack([folded.real, -folded.imag], axis=2).reshape(-1, folded.shape[-1])


def torus_sample_tables(left: np.ndarray, back: np.ndarray, vmax_in: int, vmax_out: int, n: int):
    """Fold the phi-axis DFTs into the ``"fft"`` tables: the ``"dft"`` route's real tables.

    ``left [d, (n/2 + 1) * (vmax_in + 1) * 2]`` (theta rows already sampled, see
    :func:`folded_fourier_table`) becomes the samples ``[d, points]`` of the function on the half
    torus through :func:`equitensor.so3.fourier.phi_synthesis`; ``back`` becomes ``[points, d_out]``
    through :func:`equitensor.so3.fourier.phi_analysis`. The rows ``theta = 0`` and ``theta = pi``
    are the poles, where a function on the sphere does not depend on phi: each is kept as one
    point (its ``n`` samples are equal, and their projection weights are summed).
    """
    half = n // 2 + 1
    synthesis = so3.fourier.phi_synthesis(vmax_in, n)
    samples = left.reshape(left.shape[0], half, -1) @ synthesis  # [d, j, k]
    analysis = so3.fourier.phi_analysis(vmax_out, n)
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


def half_plane_fourier_table(irreps, blocks, lmax: int) -> np.ndarray:
    """``[sum d, (2 lmax + 1) * (lmax + 1) * 2]``: coefficients ``v >= 0`` as (real, imag) pairs."""
    f = so3.fourier.sh_to_fourier(lmax)[FactorizedBackend.degree_rows(irreps, blocks)][:, :, lmax:]
    return np.stack([f.real, f.imag], axis=-1).reshape(f.shape[0], -1)


def full_plane_fourier_table(irreps, blocks, lmax: int) -> np.ndarray:
    """``[sum d, (2 lmax + 1)^2 * 2]``: all coefficients as (real, imag) pairs."""
    f = so3.fourier.sh_to_fourier(lmax)[FactorizedBackend.degree_rows(irreps, blocks)]
    return np.stack([f.real, f.imag], axis=-1).reshape(f.shape[0], -1)


def half_plane_projection_table(irreps, blocks, lmax_out: int, lmax_product: int) -> np.ndarray:
    """``[(2 Lp + 1) * (lmax_out + 1) * 2, sum d_out]``: ``c = Re sum_{v >= 0} G K'`` as a real GEMM.

    For a real function the terms ``v < 0`` are the conjugates of ``v > 0``, hence ``K' = 2 K`` for
    ``v > 0``; ``Re(G K') = G_re K'_re - G_im K'_im``.
    """
    k = so3.fourier.fourier_to_sh(lmax_out, lmax_product)[:, lmax_product : lmax_product + lmax_out + 1]
    k = k * np.where(np.arange(lmax_out + 1) > 0, 2.0, 1.0)[None, :, None]
    k = k[:, :, FactorizedBackend.degree_rows(irreps, blocks)]
    return np.stack([k.real, -k.imag], axis=2).reshape(-1, k.shape[-1])


def full_plane_projection_table(irreps, blocks, lmax_out: int, lmax_product: int) -> np.ndarray:
    """``[(2 Lp + 1)^2 * 2, sum d_out]``: ``c = Re sum_{u,v} G K`` as a real GEMM."""
    k = so3.fourier.fourier_to_sh(lmax_out, lmax_product)[:, :, FactorizedBackend.degree_rows(irreps, blocks)]
    return np.stack([k.real, -k.imag], axis=2).reshape(-1, k.shape[-1])


def convolution_scatter_index(lmax1: int, lmax2: int) -> np.ndarray:
    """Flat index of ``(u1 + u2, v1 + v2)`` in the ``(2 (L1 + L2) + 1)^2`` plane for each coefficient pair."""
    lp = lmax1 + lmax2
    n = 2 * lp + 1
    r1, r2 = np.arange(-lmax1, lmax1 + 1), np.arange(-lmax2, lmax2 + 1)
    u = (r1[:, None, None, None] + r2[None, None, :, None] + lp) * n
    v = r1[None, :, None, None] + r2[None, None, None, :] + lp
    return (u + v).reshape(-1)


def torus_pad(coefficients: torch.Tensor, n_theta: int, n_phi_half: int) -> torch.Tensor:
    """Place half-plane coefficients ``[..., 2L + 1 (u = -L..L), L + 1 (v = 0..L)]`` in rfft2 layout."""
    lmax = coefficients.shape[-1] - 1
    *batch, _, _ = coefficients.shape
    positive, negative = coefficients[..., lmax:, :], coefficients[..., :lmax, :]
    gap = coefficients.new_zeros(*batch, n_theta - (2 * lmax + 1), lmax + 1)
    rows = torch.cat([positive, gap, negative], dim=-2)  # u = 0..L, zeros, -L..-1
    return torch.cat([rows, rows.new_zeros(*batch, n_theta, n_phi_half - (lmax + 1))], dim=-1)


def torus_crop(spectrum: torch.Tensor, lmax_u: int, lmax_v: int) -> torch.Tensor:
    """Inverse of :func:`torus_pad`: ``[..., 2 lmax_u + 1 (u = -lmax_u..), lmax_v + 1]``."""
    negative = spectrum[..., spectrum.shape[-2] - lmax_u :, : lmax_v + 1]
    positive = spectrum[..., : lmax_u + 1, : lmax_v + 1]
    return torch.cat([negative, positive], dim=-2)


class FFTUnitProduct(torch.autograd.Function):
    """One ``"fft"`` product: GEMM -> ``irfft`` along phi -> product -> ``rfft`` -> GEMM, and its adjoint.

    ``forward(left [z, U1, d1], right [z, U2, d2], tables) -> [z, U, d_out]``. ``tables`` holds
    the forward tables (theta rows already sampled, half spectrum ``v >= 0`` as (re, im) pairs;
    the projection covers the full half spectrum ``v = 0..n/2``, zero past the output degree, so
    neither the ``rfft`` output nor the backward ``irfft`` input needs cropping or padding) and
    their adjoints with the conjugate-pair weights folded in: the adjoint of ``irfft`` is ``rfft``
    with weight 2 on ``0 < v``, the adjoint of ``rfft`` is ``irfft`` with weight 1/2 on
    ``0 < v < n/2`` (see :func:`fft_adjoint_tables`). The backward pass is written with
    differentiable ops (recomputing the samples when a graph is requested), so double backward
    works.
    """

    @staticmethod
    def forward(ctx, left, right, plan: dict, tables: dict):
        g1, g2 = _phi_samples(left, right, plan, tables)
        ctx.save_for_backward(left, right, g1, g2)
        ctx.plan, ctx.tables = plan, tables
        spectrum = torch.view_as_real(torch.fft.rfft(g1 * g2, dim=-1, norm="forward"))
        return spectrum.flatten(-3) @ tables["back"]

    @staticmethod
    def backward(ctx, grad_out):
        left, right, g1, g2 = ctx.saved_tensors
        plan, tables = ctx.plan, ctx.tables
        n, half = plan["n"], plan["n"] // 2 + 1
        if torch.is_grad_enabled():  # create_graph: recompute the samples with history
            g1, g2 = _phi_samples(left, right, plan, tables)
        grad_spectrum = (grad_out @ tables["back_adjoint"]).unflatten(-1, (half, n // 2 + 1, 2))
        grad_h = torch.fft.irfft(torch.view_as_complex(grad_spectrum), n=n, dim=-1)
        grads = []
        for g_other, g_self, lmax, adjoint in (
            (g2, g1, plan["l1"], "left_adjoint"),
            (g1, g2, plan["l2"], "right_adjoint"),
        ):
            grad_g = (grad_h * g_other).sum_to_size(g_self.shape)
            pairs = torch.view_as_real(torch.fft.rfft(grad_g, dim=-1)[..., : lmax + 1]).flatten(-3)
            grads.append(pairs @ tables[adjoint])
        return grads[0], grads[1], None, None


def _phi_samples(left, right, plan, tables):
    """The two functions on the half torus ``[z, U, n/2 + 1, n]`` (theta rows x phi samples)."""
    n, half = plan["n"], plan["n"] // 2 + 1
    c1 = (left @ tables["left"]).unflatten(-1, (half, plan["l1"] + 1, 2))
    c2 = (right @ tables["right"]).unflatten(-1, (half, plan["l2"] + 1, 2))
    g1 = torch.fft.irfft(torch.view_as_complex(c1), n=n, dim=-1, norm="forward")
    g2 = torch.fft.irfft(torch.view_as_complex(c2), n=n, dim=-1, norm="forward")
    return g1, g2


def pad_projection_table(back: np.ndarray, vout: int, n: int) -> np.ndarray:
    """Extend a ``[(n/2 + 1) * (vout + 1) * 2, d]`` projection table with zero rows up to ``v = n/2``."""
    half = n // 2 + 1
    padded = np.zeros((half, n // 2 + 1, 2, back.shape[1]))
    padded[:, : vout + 1] = back.reshape(half, vout + 1, 2, -1)
    return padded.reshape(-1, back.shape[1])


def fft_adjoint_tables(left, right, back, l1, l2, n) -> dict[str, np.ndarray]:
    """Adjoint tables of :class:`FFTUnitProduct`, with the conjugate-pair weights folded in."""
    half, nyquist = n // 2 + 1, n // 2
    rfft_adjoint = np.where(np.arange(nyquist + 1) % nyquist == 0, 1.0, 0.5)  # 1 at v = 0 and n/2
    back = back.reshape(half, nyquist + 1, 2, back.shape[1]) * rfft_adjoint[None, :, None, None]

    def irfft_adjoint(table, lmax):
        weight = np.where(np.arange(lmax + 1) > 0, 2.0, 1.0)[None, None, :, None]
        return (table.reshape(table.shape[0], half, lmax + 1, 2) * weight).reshape(table.shape[0], -1).T

    return {
        "left_adjoint": irfft_adjoint(left, l1),
        "right_adjoint": irfft_adjoint(right, l2),
        "back_adjoint": back.reshape(-1, back.shape[-1]).T,
    }


class GauntFFTBackend(FactorizedBackend):
    """Gaunt product as a 2D convolution of Fourier coefficients (FFT or direct)."""

    backend_name = "gaunt_fft"

    def __init__(self, descriptor, method: str = "auto", allow_subset: bool = False):
        if method not in METHODS:
            raise ValueError(f"method={method!r}; expected one of {METHODS}")
        self.method = method
        self.unit_plans: list[dict] = []
        super().__init__(descriptor, allow_subset=allow_subset)
        for k, plan in enumerate(self.unit_plans):
            if plan["method"] == "fft":  # from the final tables (the path coefficient is folded in)
                tables = (self._tables[f"{name}_{k}"] for name in ("left", "right", "back"))
                adjoints = fft_adjoint_tables(*tables, plan["l1"], plan["l2"], plan["n"])
                for name, table in adjoints.items():
                    self.add_table(f"{name}_{k}", table)

    def unit_tables(self, unit: ProductUnit):
        d = self.descriptor
        l1, l2, lo = self.unit_degrees(unit)
        lp = l1 + l2
        method = self.method if self.method != "auto" else ("direct" if lp <= DIRECT_MAX_DEGREE else "dft")
        lo_table = self.unit_degrees(unit)[2]
        if method in ("fft", "dft"):
            n = FFT_SIZE(2 * lp + 1) if method == "fft" else _even_fft_size(2 * lp + 1)
            left = folded_fourier_table(d.irreps_in1, unit.blocks1, l1, n)
            right = folded_fourier_table(d.irreps_in2, unit.blocks2, l2, n)
            back = folded_projection_table(d.irreps_out, unit.outputs, lo_table, lp, n)
            plan = {"method": method, "l1": l1, "l2": l2, "lp": lp, "lo": lo_table, "n": n}
            vout = min(lo_table, lp)
            if method == "dft":
                left, back_left = torus_sample_tables(left, back, l1, vout, n)
                right, _ = torus_sample_tables(right, back, l2, vout, n)
                back = back_left
            else:
                back = pad_projection_table(back, vout, n)
        elif method == "direct":
            left = full_plane_fourier_table(d.irreps_in1, unit.blocks1, l1)
            right = full_plane_fourier_table(d.irreps_in2, unit.blocks2, l2)
            back = full_plane_projection_table(d.irreps_out, unit.outputs, lo_table, lp)
            plan = {"method": method, "l1": l1, "l2": l2, "lp": lp}
            self.add_table(
                f"scatter_{len(self.unit_plans)}", convolution_scatter_index(l1, l2).astype(np.float64)
            )
        else:
            n = so3.fourier.fast_fft_size(2 * lp + 1)
            left = half_plane_fourier_table(d.irreps_in1, unit.blocks1, l1)
            right = half_plane_fourier_table(d.irreps_in2, unit.blocks2, l2)
            back = half_plane_projection_table(d.irreps_out, unit.outputs, lo_table, lp)
            plan = {"method": method, "l1": l1, "l2": l2, "lp": lp, "lo": lo_table, "n": n}
        self.unit_plans.append(plan)
        return left, right, back

    def product(self, k, left, right):
        plan = self.unit_plans[k]
        if plan["method"] != "fft":
            return super().product(k, left, right)
        names = ("left", "right", "back", "left_adjoint", "right_adjoint", "back_adjoint")
        tables = {name: self.table(f"{name}_{k}", left) for name in names}
        batch = torch.broadcast_shapes(left.shape[:-1], right.shape[:-1])
        if 0 in batch:  # MKL's FFT rejects empty batches
            return left.new_zeros(*batch, tables["back"].shape[1])
        return FFTUnitProduct.apply(left, right, plan, tables)

    def combine(self, k, f1, f2):
        plan = self.unit_plans[k]
        l1, l2, lp = plan["l1"], plan["l2"], plan["lp"]
        batch = torch.broadcast_shapes(f1.shape[:-1], f2.shape[:-1])
        if 0 in batch:  # MKL's FFT rejects empty batches
            return f1.new_zeros(*batch, self._tables[f"back_{k}"].shape[0])
        if plan["method"] == "direct":
            c1 = torch.view_as_complex(
                f1.reshape(*f1.shape[:-1], (2 * l1 + 1) ** 2, 2).contiguous()
            )  # [z, U, P1]
            c2 = torch.view_as_complex(f2.reshape(*f2.shape[:-1], (2 * l2 + 1) ** 2, 2).contiguous())
            outer = (c1.unsqueeze(-1) * c2.unsqueeze(-2)).flatten(-2)
            batch = torch.broadcast_shapes(c1.shape[:-1], c2.shape[:-1])
            index = self._scatter_index(k, f1.device)
            plane = outer.new_zeros(*batch, (2 * lp + 1) ** 2).index_add(-1, index, outer)
            return torch.view_as_real(plane).flatten(-2)
        if plan["method"] == "dft":  # the tables sample the half torus: a pointwise product
            return f1 * f2
        n, lo = plan["n"], plan["lo"]
        half = n // 2 + 1
        c1 = torch.view_as_complex(f1.reshape(*f1.shape[:-1], 2 * l1 + 1, l1 + 1, 2).contiguous())
        c2 = torch.view_as_complex(f2.reshape(*f2.shape[:-1], 2 * l2 + 1, l2 + 1, 2).contiguous())
        # norm="forward": the inverse transform is the plain sum sum_uv G e^{i(u theta + v phi)}
        g1 = torch.fft.irfft2(torus_pad(c1, n, half), s=(n, n), norm="forward")
        g2 = torch.fft.irfft2(torus_pad(c2, n, half), s=(n, n), norm="forward")
        spectrum = torch.fft.rfft2(g1 * g2, norm="forward")
        return torch.view_as_real(torus_crop(spectrum, lp, min(lo, lp))).flatten(-3)

    def _scatter_index(self, k, device):
        return self.table(f"scatter_{k}", torch.empty(0, device=device, dtype=torch.float64)).long()
