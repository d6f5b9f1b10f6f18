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
   * ``"fft"``: the phi axis goes through ``torch.fft.irfft`` / ``rfft`` inside
     :class:`FFTUnitProduct`, whose backward pass calls the adjoint transforms directly. The
     theta axis needs ``n_theta = 2 (L1 + L2) + 1`` (odd: ``L1 + L2 + 1`` rows after the fold;
     its DFT lives in the tables, so folding it there costs no more than the plain change of
     basis, whose table has as many columns). The phi axis only needs the product's bins
     ``v <= vout`` (the highest output degree) free of aliasing: ``n_phi > L1 + L2 + vout``
     (and ``> 2 max(L1, L2)``), rounded up to ``2^k`` or ``3 * 2^k`` (:data:`FFT_SIZE`), the
     lengths at which batched short FFTs are fast on CPU. The transforms run over chunks of the
     batch (:data:`FFT_CHUNK_FLOATS`) with reused zero-padded buffers;
   * ``"direct"``: the explicit convolution sum (outer product of the coefficient arrays,
     scattered onto ``u1 + u2, v1 + v2``);
3. Fourier -> harmonics with the exact projection table
   :func:`equitensor.so3.fourier.fourier_to_sh` (it integrates against ``sin(theta)``),
   truncated to the requested output degrees.

Real inputs have Hermitian coefficient arrays, so every route keeps only ``v >= 0``. The
literal route of Luo et al. (zero-padded ``irfft2`` -> product -> ``rfft2`` on the full torus)
is kept in the tests as an independent reference (``tests/gaunt_reference.py``).

Options:
    method: ``"auto"`` (default), ``"dft"``, ``"fft"`` or ``"direct"``. ``"auto"`` takes
        ``"direct"`` when ``L1 + L2 <= DIRECT_MAX_DEGREE`` for the product at hand (a product of
        scalars: one multiplication), else ``"dft"``: at the short transform lengths of these
        products (``n`` of a few tens) a ``torch.fft`` call on CPU costs more than a GEMM
        against the DFT matrix, so ``"dft"`` is the CPU choice; on hardware with fast batched
        FFTs (GPUs) ``"fft"`` may win. ``benchmarks/gaunt_speed.py`` times the routes
        (``docs/benchmarks_gaunt.md``).
    allow_subset: drop (with a warning) couplings with odd ``l1 + l2 + l3`` instead of raising.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ... import so3
from ...so3 import fourier_product
from .factorized import TABLES, FactorizedBackend, ProductUnit, eager_cpu_kernel_allowed

#: ``method="auto"`` convolves directly when ``L1 + L2`` is at most this (see module docstring).
DIRECT_MAX_DEGREE = 0
METHODS = ("auto", "dft", "fft", "direct")
#: phi-axis transform length of the ``"fft"`` route for a given minimum (see module docstring).
FFT_SIZE = so3.fourier.batched_fft_size


@dataclass(frozen=True)
class RoutePlan:
    """How one unit's product is computed (built by :meth:`build`; plain ints, constants for
    dynamo's guards).

    Attributes:
        method: the route, ``"dft"``, ``"fft"`` or ``"direct"`` (``"auto"`` resolved).
        l1, l2: highest degree of the unit's input-1 / input-2 blocks; the inputs' Fourier
            coefficients have ``|u|, |v| <= l1`` (``l2``).
        lo: highest degree of the unit's output blocks.
        n: ``"dft"`` only (else 0): points per axis of the torus whose half the tables sample
            (even, ``>= 2 lp + 1``; ``(n/2 - 1) n + 2`` samples).
        rows: ``"fft"`` only (else 0): theta rows sampled, ``n_theta // 2 + 1`` with
            ``n_theta = 2 lp + 1``; the spectra are ``[..., rows * (v + 1) * 2]``.
        n_phi: ``"fft"`` only (else 0): length of the phi-axis transforms (samples per row).
    """

    method: str
    l1: int
    l2: int
    lo: int
    n: int = 0
    rows: int = 0
    n_phi: int = 0

    @property
    def lp(self) -> int:
        """Highest degree (and frequency) of the product of the two inputs."""
        return self.l1 + self.l2

    @property
    def vout(self) -> int:
        """Highest phi frequency of the product that the projection reads."""
        return min(self.lo, self.lp)

    @classmethod
    def build(cls, method: str, l1: int, l2: int, lo: int) -> RoutePlan:
        """The plan of a unit with degrees ``l1``, ``l2`` -> ``lo`` (``method`` may be ``"auto"``)."""
        lp = l1 + l2
        if method == "auto":
            method = "direct" if lp <= DIRECT_MAX_DEGREE else "dft"
        if method == "dft":
            return cls(method, l1, l2, lo, n=fourier_product.even_fft_size(2 * lp + 1))
        if method == "fft":
            # theta: the DFT is folded into the tables, so any n_theta > 2 lp works; the odd
            # 2 lp + 1 gives the fewest rows. phi: the bins v <= vout of the product are exact
            # when n_phi > lp + vout, and each input's spectrum must stay below Nyquist.
            n_theta = 2 * lp + 1
            n_phi = FFT_SIZE(max(lp + min(lo, lp) + 1, 2 * max(l1, l2) + 2))
            return cls(method, l1, l2, lo, rows=n_theta // 2 + 1, n_phi=n_phi)
        return cls(method, l1, l2, lo)


class FFTTables(NamedTuple):
    """The tables of one ``"fft"`` product (in the inputs' dtype and device).

    ``left [sum d1, rows * (l1 + 1) * 2]`` and ``right`` map the inputs to their half spectra
    in phi on the sampled theta rows; ``back [rows * (vout + 1) * 2, sum d_out]`` projects the
    product's spectrum; the ``*_adjoint`` tables are the adjoint maps of the three
    (:func:`equitensor.so3.fourier_product.fft_adjoint_tables`).
    """

    left: torch.Tensor
    right: torch.Tensor
    back: torch.Tensor
    left_adjoint: torch.Tensor
    right_adjoint: torch.Tensor
    back_adjoint: torch.Tensor


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


#: samples (floats) of one function per chunk of the transforms in the ``"fft"`` route: its
#: intermediates then stay in cache and below glibc's mmap threshold (32 MB), which otherwise
#: makes every call fault in fresh pages (see ``docs/benchmarks_gaunt.md``).
FFT_CHUNK_FLOATS = 1 << 18


class FFTUnitProduct(torch.autograd.Function):
    """One ``"fft"`` product: GEMM -> ``irfft`` along phi -> product -> ``rfft`` -> GEMM, and its adjoint.

    ``forward(left [z, U1, d1], right [z, U2, d2], plan: RoutePlan, tables: FFTTables) -> [z, U, d_out]``.
    The tables map the inputs to their half spectra in phi (``v = 0..l``, (re, im) pairs) on the theta rows
    already sampled, and read the first ``vout + 1`` bins of the product's spectrum; their
    adjoints carry the conjugate-pair weights (see
    :func:`equitensor.so3.fourier_product.fft_adjoint_tables`).

    Eager CPU execution only (:func:`~equitensor.ops.backends.factorized.eager_cpu_kernel_allowed`;
    elsewhere :func:`fft_unit_product_plain` computes the same function). The GEMMs run on the
    whole batch; the transforms and the pointwise product between them run over chunks of it.
    The backward reuses the two functions' samples kept by the forward.
    When a graph of the backward is requested, the backward runs as differentiable ops on the
    whole batch, so double backward works.
    """

    @staticmethod
    def forward(ctx, left, right, plan: RoutePlan, tables: FFTTables):
        c1, c2 = left @ tables.left, right @ tables.right
        ctx.plan, ctx.tables = plan, tables
        batch = torch.broadcast_shapes(c1.shape[:-1], c2.shape[:-1])
        spectrum = c1.new_empty(*batch, plan.rows * (plan.vout + 1) * 2)
        # the samples are kept for the backward (written in place, chunk by chunk): recomputing
        # them there costs two more irfft per chunk; an input
        # broadcast over the batch (leading size 1) is recomputed instead
        keep = c1.shape[0] > 1 and c2.shape[0] > 1
        samples = [c.new_empty(*c.shape[:-1], plan.rows, plan.n_phi) for c in (c1, c2)] if keep else [None, None]
        workspace = _Workspace(plan)
        for rows, (chunk1, chunk2) in _chunks(plan, batch, c1, c2):
            out1, out2 = (None, None) if not keep else (samples[0][rows], samples[1][rows])
            g1 = workspace.synthesis(chunk1, plan.l1, "forward", out=out1)
            g2 = workspace.synthesis(chunk2, plan.l2, "forward", out=out2)
            _analysis_into(spectrum[rows], g1 * g2, plan.vout, "forward")
        ctx.save_for_backward(left, right, c1, c2, *(samples if keep else ()))
        return spectrum @ tables.back

    @staticmethod
    def backward(ctx, grad_out):
        left, right, c1, c2, *kept = ctx.saved_tensors
        plan, tables = ctx.plan, ctx.tables
        grad_spectrum = grad_out @ tables.back_adjoint
        if torch.is_grad_enabled():  # create_graph: differentiable ops over the whole batch
            c1, c2 = left @ tables.left, right @ tables.right  # with history
            g1, g2 = _synthesis(c1, plan.l1, plan), _synthesis(c2, plan.l2, plan)
            grad_h = _synthesis(grad_spectrum, plan.vout, plan, norm="backward")
            grad_c1 = _analysis((grad_h * g2).sum_to_size(g1.shape), plan.l1, "backward").sum_to_size(c1.shape)
            grad_c2 = _analysis((grad_h * g1).sum_to_size(g2.shape), plan.l2, "backward").sum_to_size(c2.shape)
            return grad_c1 @ tables.left_adjoint, grad_c2 @ tables.right_adjoint, None, None
        grad_c1, grad_c2 = torch.zeros_like(c1), torch.zeros_like(c2)
        workspace = _Workspace(plan)
        for rows, (grad_chunk, chunk1, chunk2) in _chunks(plan, grad_spectrum.shape[:-1], grad_spectrum, c1, c2):
            if kept:
                g1, g2 = kept[0][rows], kept[1][rows]
            else:
                g1 = workspace.synthesis(chunk1, plan.l1, "forward")
                g2 = workspace.synthesis(chunk2, plan.l2, "forward")
            grad_h = workspace.synthesis(grad_chunk, plan.vout, "backward")
            for grad, samples, lmax in ((grad_c1, grad_h * g2, plan.l1), (grad_c2, grad_h * g1, plan.l2)):
                if grad.shape[0] > 1:
                    target = grad[rows]
                    _analysis_into(target, samples.sum_to_size(*target.shape[:-1], *samples.shape[-2:]), lmax, "backward")
                else:  # a broadcast input: its gradient sums over the batch
                    grad += _analysis(samples, lmax, "backward").sum_to_size(grad.shape)
        return grad_c1 @ tables.left_adjoint, grad_c2 @ tables.right_adjoint, None, None


def empty_batch_product(left: torch.Tensor, right: torch.Tensor, width: int) -> torch.Tensor:
    """The (empty) result of a product over an empty batch, ``[*batch, width]``, with both inputs
    in its autograd graph, so that (double) backward through an empty batch works as for any other."""
    batch = torch.broadcast_shapes(left.shape[:-1], right.shape[:-1])
    return (left.sum(-1, keepdim=True) * right.sum(-1, keepdim=True)).expand(*batch, width)


def fft_unit_product_plain(left, right, plan: RoutePlan, tables: FFTTables) -> torch.Tensor:
    """The ``"fft"`` product of :class:`FFTUnitProduct` as plain differentiable ops on the whole batch.

    Used while ``torch.compile`` traces and off the CPU (one ``torch.fft`` call per transform on
    the device, autograd derives every order of gradient; ``irfft``'s backward weighs the
    conjugate pairs as :func:`equitensor.so3.fourier_product.fft_adjoint_tables` does).
    """
    c1, c2 = left @ tables.left, right @ tables.right
    g1, g2 = _synthesis(c1, plan.l1, plan), _synthesis(c2, plan.l2, plan)
    return _analysis(g1 * g2, plan.vout, "forward") @ tables.back


class _Workspace:
    """Zero-padded half-spectrum buffers reused across the chunks of one call: only the bins
    ``v <= vmax`` are written, so the padding is zeroed once rather than per chunk."""

    def __init__(self, plan):
        self.plan, self.buffers = plan, {}

    def synthesis(self, pairs, vmax, norm, out=None):
        """``irfft`` along phi: ``[..., rows * (vmax + 1) * 2]`` -> samples ``[..., rows, n_phi]``
        (written into ``out``, a contiguous tensor of that shape, when given)."""
        n_phi, rows = self.plan.n_phi, self.plan.rows
        count = pairs.numel() // (2 * (vmax + 1))
        buffer = self.buffers.get(vmax)
        if buffer is None or buffer.shape[0] < count:
            buffer = self.buffers[vmax] = pairs.new_zeros(count, n_phi // 2 + 1, 2)
        buffer[:count, : vmax + 1].copy_(pairs.reshape(count, vmax + 1, 2))
        spectrum = torch.view_as_complex(buffer[:count])
        if out is not None:
            torch.fft.irfft(spectrum, n=n_phi, dim=-1, norm=norm, out=out.view(count, n_phi))
            return out
        samples = torch.fft.irfft(spectrum, n=n_phi, dim=-1, norm=norm)
        return samples.reshape(*pairs.shape[:-1], rows, n_phi)


def _chunks(plan, batch, *tensors):
    """``(slice, chunks of tensors)`` over the leading batch dimension (broadcast ones pass whole)."""
    per_sample = max(1, math.prod(batch[1:])) * plan.rows * plan.n_phi
    size = max(1, FFT_CHUNK_FLOATS // per_sample)
    for start in range(0, batch[0], size):
        rows = slice(start, min(start + size, batch[0]))
        yield rows, tuple(t[rows] if t.shape[0] > 1 else t for t in tensors)


def _synthesis(pairs, vmax, plan, norm="forward"):
    """Differentiable ``irfft`` along phi: ``[..., rows * (vmax + 1) * 2]`` -> ``[..., rows, n_phi]``."""
    coefficients = torch.view_as_complex(pairs.reshape(-1, vmax + 1, 2))  # irfft zero-pads the bins
    samples = torch.fft.irfft(coefficients, n=plan.n_phi, dim=-1, norm=norm)
    return samples.reshape(*pairs.shape[:-1], plan.rows, plan.n_phi)


def _analysis(samples, vmax, norm):
    """``rfft`` along phi, bins ``v = 0..vmax`` as (re, im) pairs, flattened with the theta rows."""
    spectrum = torch.fft.rfft(samples, dim=-1, norm=norm)[..., : vmax + 1]
    return torch.view_as_real(spectrum).reshape(*spectrum.shape[:-2], -1)


def _analysis_into(out, samples, vmax, norm):
    """:func:`_analysis` written into the contiguous ``out``: one copy of the kept bins."""
    spectrum = torch.fft.rfft(samples, dim=-1, norm=norm)[..., : vmax + 1]
    out.view(*spectrum.shape, 2).copy_(torch.view_as_real(spectrum))


class GauntFFTBackend(FactorizedBackend):
    """Gaunt product as a 2D convolution of Fourier coefficients (FFT or direct)."""

    backend_name = "gaunt_fft"

    def __init__(self, descriptor, method: str = "auto", allow_subset: bool = False):
        if method not in METHODS:
            raise ValueError(f"method={method!r}; expected one of {METHODS}")
        self.method = method
        #: one :class:`RoutePlan` per unit (in the order of ``units``)
        self.unit_plans: list[RoutePlan] = []
        super().__init__(descriptor, allow_subset=allow_subset)
        for plan, constants in zip(self.unit_plans, self.unit_constants):
            if plan.method == "fft":  # from the final tables (the path coefficient is folded in)
                tables = (constants.master(name) for name in TABLES)
                adjoints = fourier_product.fft_adjoint_tables(*tables, plan.l1, plan.l2, plan.vout)
                for name, table in adjoints.items():
                    constants.add_table(name, table)
            elif plan.method == "direct":  # where each coefficient pair lands in the product's plane
                scatter = fourier_product.convolution_scatter_index(plan.l1, plan.l2)
                scatter = torch.as_tensor(scatter, dtype=torch.int64)
                constants.register_buffer("convolution_scatter", scatter, persistent=False)

    def unit_tables(self, unit: ProductUnit):
        d = self.descriptor
        plan = RoutePlan.build(self.method, *self.unit_degrees(unit))
        rows1 = self.degree_rows(d.irreps_in1, unit.blocks1)
        rows2 = self.degree_rows(d.irreps_in2, unit.blocks2)
        rows_out = self.degree_rows(d.irreps_out, unit.outputs)
        if plan.method == "fft":
            n_theta = 2 * plan.lp + 1
            left = fourier_product.folded_fourier_table(plan.l1, n_theta, rows1)
            right = fourier_product.folded_fourier_table(plan.l2, n_theta, rows2)
            back = fourier_product.folded_projection_table(plan.lo, plan.lp, n_theta, rows_out)  # v = 0..vout
        elif plan.method == "dft":
            left = fourier_product.folded_fourier_table(plan.l1, plan.n, rows1)
            right = fourier_product.folded_fourier_table(plan.l2, plan.n, rows2)
            back = fourier_product.folded_projection_table(plan.lo, plan.lp, plan.n, rows_out)
            left, back_left = fourier_product.torus_sample_tables(left, back, plan.l1, plan.vout, plan.n)
            right, _ = fourier_product.torus_sample_tables(right, back, plan.l2, plan.vout, plan.n)
            back = back_left
        else:  # "direct"
            left = fourier_product.full_plane_fourier_table(plan.l1, rows1)
            right = fourier_product.full_plane_fourier_table(plan.l2, rows2)
            back = fourier_product.full_plane_projection_table(plan.lo, plan.lp, rows_out)
        self.unit_plans.append(plan)
        return left, right, back

    def product(self, k, constants, left, right):
        plan = self.unit_plans[k]
        if plan.method != "fft":
            return super().product(k, constants, left, right)
        tables = FFTTables(*(constants.table(name, left) for name in FFTTables._fields))
        batch = torch.broadcast_shapes(left.shape[:-1], right.shape[:-1])
        if 0 in batch:  # MKL's FFT rejects empty batches
            return empty_batch_product(left, right, tables.back.shape[1])
        if eager_cpu_kernel_allowed(left):
            return FFTUnitProduct.apply(left, right, plan, tables)
        return fft_unit_product_plain(left, right, plan, tables)

    def is_pointwise(self, k):
        return self.unit_plans[k].method == "dft"

    def combine(self, k, f1, f2):
        plan = self.unit_plans[k]
        if plan.method == "direct":
            # [z, U, P1] and [z, U, P2] complex coefficients
            c1 = torch.view_as_complex(f1.reshape(*f1.shape[:-1], (2 * plan.l1 + 1) ** 2, 2).contiguous())
            c2 = torch.view_as_complex(f2.reshape(*f2.shape[:-1], (2 * plan.l2 + 1) ** 2, 2).contiguous())
            outer = (c1.unsqueeze(-1) * c2.unsqueeze(-2)).flatten(-2)
            batch = torch.broadcast_shapes(c1.shape[:-1], c2.shape[:-1])
            index = self.unit_constants[k].convolution_scatter
            plane = outer.new_zeros(*batch, (2 * plan.lp + 1) ** 2).index_add(-1, index, outer)
            return torch.view_as_real(plane).flatten(-2)
        return f1 * f2  # "dft": the tables sample the half torus, the product is pointwise
