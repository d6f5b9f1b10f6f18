"""Many-body product basis with Gaunt products (``gaunt_grid``, ``gaunt_fft``) or CP products (``cp``).

Semantics (Luo et al. 2024; Xie et al. 2025, "MACE with Gaunt products"). Per node ``n`` with
element ``e`` and per channel ``c``, the node features are the coefficients of a function on
the sphere (orthonormal real harmonics, natural-parity irreps 0e, 1o, 2e, ... of
``irreps_in``):

    f_{n,c}(r) = sum_l w_in[e, c, l] x[n, c, l] · Y_l(r)

and the output is the sum over the body orders ``nu = 1..correlation`` of the projections of
its powers, each with its own weights:

    out[n, c, l'] = sum_nu w_out[e, nu, c, l'] · P_l'( f_{n,c}^nu )

(``P_l'``: coefficients of degree ``l'`` of ``irreps_out``). For ``correlation = 1`` this is the
per-element weighted linear map ``w_out[e, 1, c, l] w_in[e, c, l] x[n, c, l]``.

* ``gaunt_grid``: ``f`` is evaluated once on a Gauss-Legendre x uniform grid that integrates
  degree ``correlation * L_in + L_out`` exactly, powers are pointwise products, each power is
  projected with the quadrature weights (``method="grid"``). Exact. ``method="sparse"`` computes
  the same polynomial from its monomial expansion instead: the same quadrature, done once at
  construction, gives the coefficients of ``P_l'(f^nu)`` on the sorted monomials of ``x``
  (:func:`equitensor.so3.coupling.gaunt_power_terms`), which run on the fused numba kernels of
  the ``cg`` product basis (one path per (l', nu), so about half its entries; no grid tensor,
  nothing but the inputs kept for autograd, differentiable twice; CPU). ``"auto"`` (default):
  ``sparse`` on CPU, ``grid`` elsewhere.
* ``gaunt_fft``: ``f`` goes once to its 2D Fourier coefficients and onto a torus grid large
  enough for ``f^correlation`` (no aliasing); powers are pointwise products there (= repeated
  convolutions of the coefficients), and each power returns through rFFT and the exact
  Fourier -> harmonics table. Exact; equal to ``gaunt_grid`` to round-off.
* ``cp``: the powers are replaced by a chain of CP-factorised shared-path CG products
  (:mod:`equitensor.so3.cp`) truncated at ``L = max(L_in, L_out)``:
  ``h_1 = f``, ``h_{nu+1} = C((A^T h_nu) * (B^T f))``; ``out = sum_nu w_out[nu] P(h_nu)``.
  Option ``rank`` as for the ``cp`` tensor product (``"full"`` is exact and equivariant).

Parameters: ``weights_in [num_elements, channels, len(irreps_in)]`` (initialised to 1) and
``weights_out [num_elements, correlation, channels, len(irreps_out)]`` (standard normal over
``sqrt(correlation)``). Every block of ``irreps_in`` and ``irreps_out`` must have natural parity
(the powers of a natural-parity function have natural parity) and a distinct degree.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ... import so3
from ...so3 import fourier_product
from ...so3.coupling import gaunt_power_terms
from .base import ProductBasisBackend
from .gaunt_fft import torus_crop, torus_pad
from .symmetric_contraction import FusedContraction


class _PowerProductBasis(ProductBasisBackend):
    """Common parameters, validation and the weighted sum over body orders."""

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int):
        super().__init__(irreps_in, irreps_out, correlation, num_elements)
        for name, irreps in (("irreps_in", self.irreps_in), ("irreps_out", self.irreps_out)):
            degrees = [ir.l for _, ir in irreps]
            if len(set(degrees)) != len(degrees):
                raise ValueError(
                    f"{name}={irreps}: each degree may appear once in a {type(self).__name__} product basis"
                )
            pseudo = [str(ir) for _, ir in irreps if ir.p != (-1) ** ir.l]
            if pseudo:
                raise ValueError(
                    f"{name}={irreps} has pseudo-tensor blocks {pseudo}: powers of a function on the sphere only "
                    "produce natural-parity irreps (0e, 1o, 2e, 3o, ...)"
                )
        self.lmax_in = max(ir.l for _, ir in self.irreps_in)
        self.lmax_out = max(ir.l for _, ir in self.irreps_out)
        c = self.num_channels
        self.weights_in = torch.nn.Parameter(torch.ones(num_elements, c, len(self.irreps_in)))
        self.weights_out = torch.nn.Parameter(
            torch.randn(num_elements, correlation, c, len(self.irreps_out)) / math.sqrt(correlation)
        )
        # plain ints for the forward: traced code must not touch e3nn Irrep objects (dynamo's
        # guards call Irrep.__len__, which raises)
        self._in_dims = tuple(ir.dim for _, ir in self.irreps_in)
        self._out_dims = tuple(ir.dim for _, ir in self.irreps_out)
        self._out_dim = self.irreps_out.dim
        self.in_rows = np.concatenate([np.arange(ir.l**2, (ir.l + 1) ** 2) for _, ir in self.irreps_in])
        self.out_rows = np.concatenate([np.arange(ir.l**2, (ir.l + 1) ** 2) for _, ir in self.irreps_out])
        # which output block each output component belongs to (to expand per-block weights)
        self._out_block_of_component = torch.tensor(
            np.concatenate([np.full(ir.dim, k) for k, (_, ir) in enumerate(self.irreps_out)]),
            dtype=torch.long,
        )
        self._in_block_of_component = torch.tensor(
            np.concatenate([np.full(ir.dim, k) for k, (_, ir) in enumerate(self.irreps_in)]), dtype=torch.long
        )
        self.paths = tuple(
            (nu, ir)
            for nu in range(1, correlation + 1)
            for _, ir in self.irreps_out
            if ir.l <= nu * self.lmax_in
        )

    def powers(self, coefficients: torch.Tensor):
        """Yield the projections ``[N, C, irreps_out components]`` of the body orders 1..correlation."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, element_onehot: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], self.num_channels
        if n == 0:  # nothing to do (and MKL's FFT rejects empty batches)
            return x.new_zeros(0, self._out_dim) + 0 * self.weights_out.sum()
        device_index_in = self._in_block_of_component.to(x.device)
        device_index_out = self._out_block_of_component.to(x.device)
        blocks = [block.reshape(n, c, d) for block, d in zip(x.split([c * d for d in self._in_dims], 1), self._in_dims)]
        coefficients = torch.cat(blocks, dim=-1)  # [N, C, sum d_in], degree order of irreps_in
        w_in = torch.einsum("ne,ecb->ncb", element_onehot, self.weights_in)
        coefficients = coefficients * w_in[:, :, device_index_in]
        w_out = torch.einsum("ne,ekcb->nkcb", element_onehot, self.weights_out)[..., device_index_out]
        out = None
        for nu, projected in enumerate(self.powers(coefficients)):
            term = projected * w_out[:, nu]
            out = term if out is None else out + term
        # [N, C, sum d_out] -> mul_ir
        pieces, start = [], 0
        for d in self._out_dims:
            pieces.append(out[:, :, start : start + d].reshape(n, c * d))
            start += d
        return torch.cat(pieces, dim=1)


class GauntGridProductBasis(_PowerProductBasis):
    """Powers of the node function by pointwise products on an exact S2 grid."""

    METHODS = ("auto", "grid", "sparse")

    def __init__(
        self,
        irreps_in,
        irreps_out,
        correlation: int,
        num_elements: int,
        resolution=None,
        method: str = "auto",
    ):
        super().__init__(irreps_in, irreps_out, correlation, num_elements)
        if method not in self.METHODS:
            raise ValueError(f"gaunt_grid product basis: method={method!r}; expected one of {self.METHODS}")
        self.method = method
        degree = correlation * self.lmax_in + self.lmax_out
        if resolution is None:
            res_beta, res_alpha = so3.s2grid.exact_resolution(degree)
        else:
            res_beta, res_alpha = (int(r) for r in resolution)
            so3.s2grid.check_resolution(res_beta, res_alpha, degree)
        self.resolution = (res_beta, res_alpha)
        lmax = max(self.lmax_in, self.lmax_out)
        self.add_table("evaluate", so3.s2grid.harmonics_on_grid(lmax, res_beta, res_alpha)[:, self.in_rows].T)
        self.add_table("project", so3.s2grid.projection_on_grid(lmax, res_beta, res_alpha)[:, self.out_rows])
        # sparse: P_l'(f^nu) on monomials; weight rows (output block o, order nu) with a nonzero projection
        terms = gaunt_power_terms(
            tuple(ir.l for _, ir in self.irreps_in), tuple(ir.l for _, ir in self.irreps_out), correlation
        )
        self.fused = FusedContraction(terms, self.irreps_in, self.irreps_out, self.num_channels)
        n_out = len(self.irreps_out)
        rows = [
            o * correlation + nu for o, (_, ks) in enumerate(terms.blocks) for nu, k in enumerate(ks) if k
        ]
        self._out_rows = (
            None if rows == list(range(n_out * correlation)) else torch.tensor(rows, dtype=torch.long)
        )

    def forward(self, x: torch.Tensor, element_onehot: torch.Tensor) -> torch.Tensor:
        if self.method == "sparse" and x.device.type != "cpu":
            raise ValueError(
                f"gaunt_grid product basis: method='sparse' runs numba kernels on the CPU only, and x "
                f"is on {x.device.type!r}; use method='auto' (the pure-torch 'grid' there) or 'grid'"
            )
        sparse = self.method == "sparse" or (self.method == "auto" and x.device.type == "cpu")
        if not sparse or x.shape[0] == 0:
            return super().forward(x, element_onehot)
        n, c, e = x.shape[0], self.num_channels, self.num_elements
        w_in = (element_onehot @ self.weights_in.reshape(e, -1)).reshape(n, c, -1)  # [N, C, blocks_in]
        blocks = [w_in[:, :, b, None].expand(n, c, d).reshape(n, -1) for b, d in enumerate(self._in_dims)]
        x = x * torch.cat(blocks, 1)  # mul_ir: w_in[b] repeated 2l+1 times in block b
        w_out = (element_onehot @ self.weights_out.reshape(e, -1)).reshape(n, self.correlation, c, -1)
        w_out = w_out.permute(0, 3, 1, 2).reshape(n, -1, c)  # [N, (block, order), C]
        if self._out_rows is not None:  # (block, order) pairs without a path
            w_out = w_out.index_select(1, self._out_rows.to(x.device))
        return self.fused(x, w_out.reshape(n, -1))

    def powers(self, coefficients):
        values = coefficients @ self.table("evaluate", coefficients)  # [N, C, grid]
        project = self.table("project", coefficients)
        power = values
        for nu in range(1, self.correlation + 1):
            if nu > 1:
                power = power * values
            yield power @ project


class GauntFFTProductBasis(_PowerProductBasis):
    """Powers of the node function through its 2D Fourier series (rFFT on a torus grid)."""

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int):
        super().__init__(irreps_in, irreps_out, correlation, num_elements)
        lin, lout = self.lmax_in, self.lmax_out
        self.torus_size = so3.fourier.fast_fft_size(2 * correlation * lin + 1)
        rows_in = np.concatenate([np.arange(ir.l**2, (ir.l + 1) ** 2) for _, ir in self.irreps_in])
        self.add_table("to_fourier", fourier_product.half_plane_fourier_table(lin, rows_in))  # v >= 0
        for nu in range(1, correlation + 1):
            self.add_table(f"project_{nu}", fourier_product.half_plane_projection_table(lout, nu * lin, self.out_rows))

    def powers(self, coefficients):
        lin, n = self.lmax_in, self.torus_size
        packed = coefficients @ self.table("to_fourier", coefficients)
        fourier = torch.view_as_complex(
            packed.reshape(*packed.shape[:-1], 2 * lin + 1, lin + 1, 2).contiguous()
        )
        values = torch.fft.irfft2(torus_pad(fourier, n, n // 2 + 1), s=(n, n), norm="forward")  # once
        power = values
        for nu in range(1, self.correlation + 1):
            if nu > 1:
                power = power * values
            spectrum = torch.fft.rfft2(power, norm="forward")
            lp = nu * lin
            cropped = torch.view_as_real(torus_crop(spectrum, lp, min(self.lmax_out, lp))).flatten(-3)
            yield cropped @ self.table(f"project_{nu}", coefficients)


class CPProductBasis(_PowerProductBasis):
    """Chain of CP-factorised shared-path CG products (approximate unless ``rank="full"``)."""

    exact = False

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int, rank="default"):
        super().__init__(irreps_in, irreps_out, correlation, num_elements)
        if isinstance(rank, int) and not isinstance(rank, bool) and rank < 1:
            raise ValueError(f"CP rank must be >= 1, got {rank}")
        self.lmax = max(self.lmax_in, self.lmax_out)
        self.factors = so3.cp.cp_factors(self.lmax, rank, "even")
        f = self.factors
        self.add_table("embed", np.eye((self.lmax + 1) ** 2)[self.in_rows])  # [sum d_in, d]
        self.add_table("a", f.a)
        self.add_table("b", f.b)
        self.add_table("c_t", f.c.T)
        self.add_table("project", np.eye((self.lmax + 1) ** 2)[:, self.out_rows])

    @property
    def relative_error(self) -> float:
        return self.factors.relative_error

    def powers(self, coefficients):
        h = coefficients @ self.table("embed", coefficients)  # [N, C, d]
        right = h @ self.table("b", coefficients)  # B^T f, reused by every order
        project = self.table("project", coefficients)
        power = h
        for nu in range(1, self.correlation + 1):
            if nu > 1:
                power = ((power @ self.table("a", coefficients)) * right) @ self.table("c_t", coefficients)
            yield power @ project
