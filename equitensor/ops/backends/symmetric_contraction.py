"""Product basis ``cg``: MACE's symmetric contraction with generalised Clebsch-Gordan coupling.

For every node, channel ``c`` and output irrep ``L`` (Batatia et al. 2022, eqs. 10-11)::

    B[c, L, M] = sum_{nu=1..correlation} sum_k  w[z, nu, L, k, c]  U_nu[M, i_1..i_nu, k]  x[c, i_1] ... x[c, i_nu]

with ``x [c, d]`` the node features of one channel over the coupling irreps (``d = sum(2l+1)``,
e.g. 16 for ``0e+1o+2e+3o``), ``U_nu`` the symmetric coupling basis of
:mod:`equitensor.so3.coupling` and ``w`` weights that depend on the element ``z`` and the channel.

Execution works on the sorted monomials ``x_i1 x_i2 ... (i1 <= i2 <= ...)`` that the coupling
uses (:func:`~equitensor.so3.coupling.symmetric_contraction_terms`: each monomial is its parent
times one input), per (node, channel) column:

1. ``Q = coupling.T @ monomials`` ``[sum_o (2L_o+1) K_o]`` for every output block and order;
2. per output block, the element-dependent weights (one-hot @ weights) contract ``k``.

Methods (``ProductBasis(..., backend="cg", method=...)``):

* ``"fused"`` — numba kernels over tiles of 64 (node, channel) columns, reading ``x`` and
  writing the output in mul_ir layout directly: the monomials of a tile are built in a scratch
  buffer and the coupling is applied as its sparse entry list (about 1 % of the dense matrix is
  nonzero) with the per-node weights inside, ``out[o, M] += coef * w[o, k] * monomial``, so
  neither the monomials nor ``Q`` ever exist as tensors; autograd keeps ``x`` and the per-node
  weights. The backward pass recomputes the tile's monomials, reads the weight gradient off the
  entries and runs the chain rule down the monomial chain; its own backward (the double
  backward of force training) is a third kernel (forward-mode tangents next to the values,
  then a reverse sweep). Tiles run in parallel with numba's threads when torch is given more
  than one, else in a plain loop (no OpenMP pool). Differentiable twice, which is what force training needs; a third
  derivative raises. CPU only. :class:`FusedContraction` runs any
  :class:`~equitensor.so3.coupling.SymmetricContractionTerms` (the ``gaunt_grid`` product
  basis uses it too).
* ``"naive"`` — the reference: all monomials as a ``[n_monomials, N*c]`` tensor (``P_nu =
  P_{nu-1}[parent] * x[last]``, one row gather per order), one dense GEMM for ``Q``, the weights
  in torch; plain autograd, any device, any order of derivative. Keeps every monomial for
  autograd (the previous default).
* ``"auto"`` (default) — ``fused`` on CPU, ``naive`` elsewhere.

Both compute mace-torch's ``SymmetricContraction`` (same weights layout
``[num_elements, K, channels]`` per order) without its ``d^nu`` intermediates; the coupling basis
is the reduced, symmetric one, so ``K`` is the number of independent paths.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from ...so3.coupling import symmetric_contraction_terms
from .base import ProductBasisBackend
from .numba_threads import ThreadedKernel

METHODS = ("auto", "fused", "naive")

#: node*channel columns per tile of the fused kernels (the scratch monomials of a tile, four
#: buffers of ``n_monomials x TILE`` in the double backward, stay in the L2 cache). A module
#: constant, so numba compiles the inner loops with a fixed trip count.
TILE = 64


# --------------------------------------------------------------------------------------------
# fused: numba kernels over column tiles (monomials live only in per-tile scratch)
#
# Every kernel works on one tile of TILE columns at a time: inputs are copied into zero-padded
# scratch rows (the last tile may be narrower), all inner loops run over a whole scratch row,
# and only the columns that exist are written back.


@numba.njit(inline="always")
def _load(src, offsets, strides, channels, c0, width, dst):
    """Tile rows from a node-major tensor: ``dst[i, j] = src[node, offsets[i] + channel * strides[i]]``.

    Column ``c0 + j`` is ``(node, channel) = divmod(c0 + j, channels)``; ``j >= width`` is zero.
    """
    for i in range(dst.shape[0]):
        row, off, step = dst[i], offsets[i], strides[i]
        for j in range(TILE):
            row[j] = 0
        node, channel = c0 // channels, c0 % channels
        for j in range(width):
            row[j] = src[node, off + channel * step]
            channel += 1
            if channel == channels:
                node, channel = node + 1, 0


@numba.njit(inline="always")
def _store(src, dst, offsets, strides, channels, c0, width):
    """The inverse of :func:`_load` for the columns that exist."""
    for i in range(src.shape[0]):
        row, off, step = src[i], offsets[i], strides[i]
        node, channel = c0 // channels, c0 % channels
        for j in range(width):
            dst[node, off + channel * step] = row[j]
            channel += 1
            if channel == channels:
                node, channel = node + 1, 0


@numba.njit(inline="always")
def _monomials(parent, last, d, m):
    """Rows ``d ..`` of ``m``: ``m[t] = m[parent[t]] * m[last[t]]`` (rows ``< d`` hold ``x``)."""
    for t in range(d, parent.shape[0]):
        mt, mp, ml = m[t], m[parent[t]], m[last[t]]
        for j in range(TILE):
            mt[j] = mp[j] * ml[j]


@numba.njit(inline="always")
def _tile_columns(x, layout, it):
    """First column ``c0`` and ``width`` of tile ``it`` (the last tile may be narrower)."""
    c0 = it * TILE
    return c0, min(TILE, x.shape[0] * layout[-1] - c0)


@numba.njit(inline="always")
def _loaded(src, offsets, strides, channels, c0, width):
    """A fresh ``[len(offsets), TILE]`` scratch holding the tile's rows of ``src`` (:func:`_load`)."""
    dst = np.empty((offsets.shape[0], TILE), dtype=src.dtype)
    _load(src, offsets, strides, channels, c0, width, dst)
    return dst


@numba.njit(inline="always")
def _tile_monomials(x, parent, last, offsets, strides, channels, c0, width):
    """``[n_monomials, TILE]``: the tile's rows of ``x`` followed by the monomials built on them."""
    d = offsets.shape[0]
    m = np.empty((parent.shape[0], TILE), dtype=x.dtype)
    _load(x, offsets, strides, channels, c0, width, m[:d])
    _monomials(parent, last, d, m)
    return m


@numba.njit(cache=True, fastmath=True)
def _contract_tile(x, w, layout, parent, last, out_rows, w_rows, monos, coefs, out, it):
    """Tile ``it``: ``out[r_e] += coef_e * w[k_e] * monomial[t_e]`` summed over the entries ``e``.

    ``x [N, dim_in]``, ``w [N, K*c]`` and ``out [N, dim_out]`` (overwritten) are node-major;
    ``layout`` places their rows (see :class:`_Kernels`).
    """
    x_off, x_str, w_off, w_str, o_off, o_str, channels = layout
    c0, width = _tile_columns(x, layout, it)
    m = _tile_monomials(x, parent, last, x_off, x_str, channels, c0, width)
    wt = _loaded(w, w_off, w_str, channels, c0, width)
    acc = np.zeros((o_off.shape[0], TILE), dtype=x.dtype)
    for e in range(coefs.shape[0]):
        k, a, we, mt = coefs[e], acc[out_rows[e]], wt[w_rows[e]], m[monos[e]]
        for j in range(TILE):
            a[j] += k * we[j] * mt[j]
    _store(acc, out, o_off, o_str, channels, c0, width)


@numba.njit(cache=True, fastmath=True)
def _contract_vjp_tile(x, w, gout, layout, parent, last, out_rows, w_rows, monos, coefs, gx, gw, it):
    """Tile ``it`` of ``gx`` and ``gw``, the gradients of ``<gout, out(x, w)>``.

    The weights' gradient is read off the entries; the monomials' adjoints are then carried
    down the chain (``m[t] = m[parent[t]] * x[last[t]]``, children first) to ``x``.
    """
    x_off, x_str, w_off, w_str, o_off, o_str, channels = layout
    d, n = x_off.shape[0], parent.shape[0]
    c0, width = _tile_columns(x, layout, it)
    m = _tile_monomials(x, parent, last, x_off, x_str, channels, c0, width)
    wt = _loaded(w, w_off, w_str, channels, c0, width)
    go = _loaded(gout, o_off, o_str, channels, c0, width)
    g = np.zeros((n, TILE), dtype=x.dtype)  # adjoints of the monomials
    g_w = np.zeros((w_off.shape[0], TILE), dtype=x.dtype)
    for e in range(coefs.shape[0]):
        k, ge, we, gt, mt = coefs[e], go[out_rows[e]], wt[w_rows[e]], g[monos[e]], m[monos[e]]
        gwe = g_w[w_rows[e]]
        for j in range(TILE):
            kg = k * ge[j]
            gt[j] += kg * we[j]
            gwe[j] += kg * mt[j]
    for t in range(n - 1, d - 1, -1):
        gt, gp, gl, mp, ml = g[t], g[parent[t]], g[last[t]], m[parent[t]], m[last[t]]
        for j in range(TILE):
            gp[j] += gt[j] * ml[j]
            gl[j] += gt[j] * mp[j]
    _store(g[:d], gx, x_off, x_str, channels, c0, width)
    _store(g_w, gw, w_off, w_str, channels, c0, width)


@numba.njit(cache=True, fastmath=True)
def _contract_vjp_backward_tile(
    x, w, gout, vx, vw, layout, parent, last, out_rows, w_rows, monos, coefs, g_x, g_w, g_gout, it
):
    """Tile ``it`` of the gradients of ``Phi = <vx, gx> + <vw, gw>`` (``gx, gw`` from :func:`_contract_vjp`) w.r.t. ``x, w, gout``.

    ``Phi = sum_e coef_e gout[r_e] (w[k_e] dm[t_e] + vw[k_e] m[t_e])`` with ``dm = J(x) vx`` the
    tangent of the monomials along ``vx`` (forward mode, next to their values); ``g_gout`` and
    ``g_w`` are read off the entries, ``g_x`` is a reverse sweep through values and tangents.
    """
    x_off, x_str, w_off, w_str, o_off, o_str, channels = layout
    d, n = x_off.shape[0], parent.shape[0]
    c0, width = _tile_columns(x, layout, it)
    m = np.empty((n, TILE), dtype=x.dtype)
    dm = np.empty((n, TILE), dtype=x.dtype)
    _load(x, x_off, x_str, channels, c0, width, m[:d])
    _load(vx, x_off, x_str, channels, c0, width, dm[:d])
    for t in range(d, n):
        mt, mp, ml, dt, dp, dl = m[t], m[parent[t]], m[last[t]], dm[t], dm[parent[t]], dm[last[t]]
        for j in range(TILE):
            mt[j] = mp[j] * ml[j]
            dt[j] = dp[j] * ml[j] + mp[j] * dl[j]
    wt = _loaded(w, w_off, w_str, channels, c0, width)
    vwt = _loaded(vw, w_off, w_str, channels, c0, width)
    go = _loaded(gout, o_off, o_str, channels, c0, width)
    acc_gout = np.zeros((o_off.shape[0], TILE), dtype=x.dtype)
    acc_w = np.zeros((w_off.shape[0], TILE), dtype=x.dtype)
    a_dm = np.zeros((n, TILE), dtype=x.dtype)  # adjoints of the tangents
    a_m = np.zeros((n, TILE), dtype=x.dtype)  # adjoints of the values (rows < d: of x)
    for e in range(coefs.shape[0]):
        r, kw, t, k = out_rows[e], w_rows[e], monos[e], coefs[e]
        ge, we, ve, mt, dt = go[r], wt[kw], vwt[kw], m[t], dm[t]
        agr, awe, adt, amt = acc_gout[r], acc_w[kw], a_dm[t], a_m[t]
        for j in range(TILE):
            kg = k * ge[j]
            agr[j] += k * (we[j] * dt[j] + ve[j] * mt[j])
            awe[j] += kg * dt[j]
            adt[j] += kg * we[j]
            amt[j] += kg * ve[j]
    for t in range(n - 1, d - 1, -1):
        p, l = parent[t], last[t]
        at, bt, ap, bp, bl = a_dm[t], a_m[t], a_dm[p], a_m[p], a_m[l]
        mp, ml, dp, dl = m[p], m[l], dm[p], dm[l]
        for j in range(TILE):
            # dm[t] = dm[p] * x[l] + m[p] * vx[l];  m[t] = m[p] * x[l]
            ap[j] += at[j] * ml[j]
            bl[j] += at[j] * dp[j] + bt[j] * mp[j]
            bp[j] += at[j] * dl[j] + bt[j] * ml[j]
    _store(a_m[:d], g_x, x_off, x_str, channels, c0, width)
    _store(acc_w, g_w, w_off, w_str, channels, c0, width)
    _store(acc_gout, g_gout, o_off, o_str, channels, c0, width)


# Drivers: one call runs every tile, in parallel (numba's OpenMP pool) or, for one thread, in a
# plain loop that never starts or wakes the pool (idle OpenMP workers spin, and on a busy machine
# they take CPU from the thread doing the work); :class:`ThreadedKernel` compiles both from one body.


@ThreadedKernel.define(cache=True)
def _contract(x, w, layout, parent, last, out_rows, w_rows, monos, coefs, out):
    for it in numba.prange(_num_tiles(x, layout)):
        _contract_tile(x, w, layout, parent, last, out_rows, w_rows, monos, coefs, out, it)


@ThreadedKernel.define(cache=True)
def _contract_vjp(x, w, gout, layout, parent, last, out_rows, w_rows, monos, coefs, gx, gw):
    for it in numba.prange(_num_tiles(x, layout)):
        _contract_vjp_tile(x, w, gout, layout, parent, last, out_rows, w_rows, monos, coefs, gx, gw, it)


@ThreadedKernel.define(cache=True)
def _contract_vjp_backward(
    x, w, gout, vx, vw, layout, parent, last, out_rows, w_rows, monos, coefs, g_x, g_w, g_gout
):
    for it in numba.prange(_num_tiles(x, layout)):
        _contract_vjp_backward_tile(
            x, w, gout, vx, vw, layout, parent, last, out_rows, w_rows, monos, coefs, g_x, g_w, g_gout, it
        )


@numba.njit(inline="always")
def _num_tiles(x, layout):
    return (x.shape[0] * layout[-1] + TILE - 1) // TILE


def _kernel_args(tables, dtype: torch.dtype) -> tuple:
    """The numba kernels' trailing arguments from the custom ops' ``tables`` (see :class:`FusedContraction`)."""
    parent, last, out_rows, w_rows, monos, coefs, *layout, channels = (t.numpy() for t in tables)
    coefs = coefs.astype(torch.empty(0, dtype=dtype).numpy().dtype)
    return (*layout, int(channels[0])), parent, last, out_rows, w_rows, monos, coefs


def _numpy(*tensors: torch.Tensor) -> list[np.ndarray]:
    return [t.detach().contiguous().numpy() for t in tensors]


@torch.library.custom_op("equitensor::symmetric_contraction", mutates_args=(), device_types="cpu")
def symmetric_contraction(x: torch.Tensor, w: torch.Tensor, dim_out: int, tables: list[torch.Tensor]) -> torch.Tensor:
    """``out [N, dim_out] = B(x [N, dim_in], w [N, K*c])`` (:func:`_contract_tile` over every tile)."""
    out = torch.empty(x.shape[0], dim_out, dtype=x.dtype)
    _contract(*_numpy(x, w), *_kernel_args(tables, x.dtype), out.numpy())
    return out


@symmetric_contraction.register_fake
def _(x, w, dim_out, tables):
    return x.new_empty(x.shape[0], dim_out)


@torch.library.custom_op("equitensor::symmetric_contraction_vjp", mutates_args=(), device_types="cpu")
def symmetric_contraction_vjp(
    x: torch.Tensor, w: torch.Tensor, gout: torch.Tensor, tables: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gx, gw)``: the gradients of ``<gout, B(x, w)>`` (:func:`_contract_vjp_tile`)."""
    gx, gw = torch.empty(x.shape, dtype=x.dtype), torch.empty(w.shape, dtype=x.dtype)
    _contract_vjp(*_numpy(x, w, gout), *_kernel_args(tables, x.dtype), gx.numpy(), gw.numpy())
    return gx, gw


@symmetric_contraction_vjp.register_fake
def _(x, w, gout, tables):
    return x.new_empty(x.shape), w.new_empty(w.shape)


@torch.library.custom_op("equitensor::symmetric_contraction_vjp_backward", mutates_args=(), device_types="cpu")
def symmetric_contraction_vjp_backward(
    x: torch.Tensor,
    w: torch.Tensor,
    gout: torch.Tensor,
    vx: torch.Tensor,
    vw: torch.Tensor,
    tables: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(g_x, g_w, g_gout)``: the gradients of ``<vx, gx> + <vw, gw>`` (:func:`_contract_vjp_backward_tile`)."""
    g_x, g_w, g_gout = (torch.empty(t.shape, dtype=x.dtype) for t in (x, w, gout))
    operands = _numpy(x, w, gout, vx, vw)
    _contract_vjp_backward(*operands, *_kernel_args(tables, x.dtype), g_x.numpy(), g_w.numpy(), g_gout.numpy())
    return g_x, g_w, g_gout


@symmetric_contraction_vjp_backward.register_fake
def _(x, w, gout, vx, vw, tables):
    return x.new_empty(x.shape), w.new_empty(w.shape), gout.new_empty(gout.shape)


def _setup_contract(ctx, inputs, output):
    x, w, _dim_out, tables = inputs
    ctx.save_for_backward(x, w, *tables)


def _backward_contract(ctx, gout):
    x, w, *tables = ctx.saved_tensors
    gx, gw = symmetric_contraction_vjp(x, w, gout.contiguous(), tables)
    return gx, gw, None, [None] * len(tables)


def _setup_vjp(ctx, inputs, output):
    x, w, gout, tables = inputs
    ctx.save_for_backward(x, w, gout, *tables)


def _backward_vjp(ctx, vx, vw):
    x, w, gout, *tables = ctx.saved_tensors
    vx = torch.zeros_like(x) if vx is None else vx.contiguous()
    vw = torch.zeros_like(w) if vw is None else vw.contiguous()
    g_x, g_w, g_gout = symmetric_contraction_vjp_backward(x, w, gout, vx, vw, tables)
    return g_x, g_w, g_gout, [None] * len(tables)


def _backward_vjp_backward(ctx, *grads):
    raise RuntimeError(
        "the fused symmetric contraction is differentiable twice (forces and their training); "
        "for a third derivative use ProductBasis(..., method='naive')"
    )


symmetric_contraction.register_autograd(_backward_contract, setup_context=_setup_contract)
symmetric_contraction_vjp.register_autograd(_backward_vjp, setup_context=_setup_vjp)
symmetric_contraction_vjp_backward.register_autograd(_backward_vjp_backward, setup_context=lambda ctx, inputs, output: None)


class FusedContraction:
    """``out = B(x, w)`` for a :class:`~equitensor.so3.coupling.SymmetricContractionTerms` (numba, CPU).

    ``x [N, irreps_in.dim]`` and ``out [N, irreps_out.dim]`` in mul_ir layout (``irreps_in`` in
    the terms' input order, one multiplicity ``c``), per-node weights ``w [N, K*c]`` laid out
    ``[K, c]`` with ``K = sum_o K_o`` (block, then order, then path). Per channel:
    ``out[o, M] = sum_k w[o, k] Q[o, M, k]``. Differentiable twice (forces and their training),
    through the custom ops ``equitensor::symmetric_contraction`` and its ``_vjp`` and
    ``_vjp_backward``.

    Entry ``e`` of the coupling (``terms.rows[e]`` = row ``(o, M, k)`` of ``Q``) adds
    ``coef * w[w_rows[e]] * monomial`` to output row ``out_rows[e]`` = ``(o, M)``. The layout
    says where row ``i`` of ``x`` / ``w`` / ``out`` sits in the node-major tensors (offset and
    channel stride per row, then the number of channels). :attr:`tables` (the ops' constants,
    CPU tensors): ``parent, last, out_rows, w_rows, monomials, coefs (float64), x_offsets,
    x_strides, w_offsets, w_strides, out_offsets, out_strides, [channels]``.
    """

    def __init__(self, terms, irreps_in, irreps_out, channels: int):
        self.terms, self.dim_out = terms, irreps_out.dim
        # row (o, M, k) of Q goes to output row (o, M) with weight row (o, k)
        out_of_q, w_of_q, out_start, w_start = [], [], 0, 0
        for m, ks in terms.blocks:
            k = sum(ks)
            out_of_q.append(out_start + np.repeat(np.arange(m), k))
            w_of_q.append(w_start + np.tile(np.arange(k), m))
            out_start, w_start = out_start + m, w_start + k
        self.num_weights = w_start

        def rows_of(irreps):  # offset and channel stride of every component in mul_ir
            offsets = [s.start + np.arange(ir.dim) for s, (_, ir) in zip(irreps.slices(), irreps)]
            strides = [np.full(ir.dim, ir.dim) for _, ir in irreps]
            return np.concatenate(offsets), np.concatenate(strides)

        layout = (*rows_of(irreps_in), channels * np.arange(w_start), np.ones(w_start), *rows_of(irreps_out))
        integers = (terms.parent, terms.last, np.concatenate(out_of_q)[terms.rows], np.concatenate(w_of_q)[terms.rows],
                    terms.monomials)  # fmt: skip
        arrays = [np.array(a, dtype=np.int64, order="C") for a in integers]
        arrays.append(np.array(terms.coefs, dtype=np.float64, order="C"))
        arrays += [np.array(a, dtype=np.int64, order="C") for a in layout] + [np.array([channels], dtype=np.int64)]
        self.tables = [torch.from_numpy(a) for a in arrays]

    def __call__(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return symmetric_contraction(x.contiguous(), w.contiguous(), self.dim_out, self.tables)


# --------------------------------------------------------------------------------------------


class SymmetricContractionBackend(ProductBasisBackend):
    """MACE's symmetric contraction (``cg`` product basis), exact and complete.

    Parameters ``weights["out{o}_nu{nu}"]``: ``[num_elements, K_{o,nu}, channels]`` for output
    block ``o`` and order ``nu`` (absent when no path exists), initialised ``randn / K`` as in MACE.
    Option ``method``: ``"auto"`` (default), ``"fused"`` or ``"naive"`` (see the module docstring).
    """

    #: what the parameters mean (read by backend conversion): MACE's symmetric contraction weights
    parameterization = "mace_symmetric_contraction"

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int, method: str = "auto"):
        super().__init__(irreps_in, irreps_out, correlation, num_elements)
        if method not in METHODS:
            raise ValueError(f"cg product basis: method={method!r}; expected one of {METHODS}")
        self.method = method
        self.terms = symmetric_contraction_terms(
            tuple((ir.l, ir.p) for _, ir in self.irreps_in),
            tuple((ir.l, ir.p) for _, ir in self.irreps_out),
            self.correlation,
        )
        self.coupling_dim = self.terms.d
        self.num_monomials = len(self.terms.parent)
        # naive: one row gather per order (level nu = rows parent_nu of level nu-1 times x[last_nu])
        level = np.zeros(self.num_monomials, dtype=np.int64)
        for t in range(self.coupling_dim, self.num_monomials):
            level[t] = level[self.terms.parent[t]] + 1
        self._level_sizes = np.bincount(level).tolist()
        level_start = np.concatenate([[0], np.cumsum(self._level_sizes)])
        for nu in range(2, len(self._level_sizes) + 1):
            rows = np.flatnonzero(level == nu - 1)
            parent = self.terms.parent[rows] - level_start[nu - 2]  # position within level nu-1
            self.register_buffer(f"parent_{nu}", torch.as_tensor(parent), persistent=False)
            self.register_buffer(f"last_{nu}", torch.as_tensor(self.terms.last[rows]), persistent=False)

        self.weights = torch.nn.ParameterDict()
        self.blocks = []  # (o, M, K)
        self._weight_names = []  # in the order of the K axis: block, then order
        paths = []
        for o, ((_mul, ir), (m, ks)) in enumerate(zip(self.irreps_out, self.terms.blocks)):
            for nu, k in enumerate(ks, start=1):
                if k:
                    weight = torch.randn(self.num_elements, k, self.num_channels) / k
                    self.weights[f"out{o}_nu{nu}"] = torch.nn.Parameter(weight)
                    self._weight_names.append(f"out{o}_nu{nu}")
                    paths.append((ir, nu, k))
            self.blocks.append((o, m, sum(ks)))
        self.paths = tuple(paths)
        self.fused = FusedContraction(self.terms, self.irreps_in, self.irreps_out, self.num_channels)
        self.add_table("coupling", self.terms.coupling)
        self._in_blocks = [(mul, ir.dim) for mul, ir in self.irreps_in]

    def coupling_matrix(self, like: torch.Tensor) -> torch.Tensor:
        """``[n_monomials, sum_o (2L+1) K_o]`` in ``like``'s dtype/device (cached from float64)."""
        return self.table("coupling", like)

    def contract_naive(self, xs: torch.Tensor, w_node: torch.Tensor) -> torch.Tensor:
        """``[sum_o M_o, N*c]`` with every monomial as a tensor and one dense GEMM (the reference).

        ``xs [d, N*c]``, ``w_node [K, N, c]`` (``K = sum_o K_o``).
        """
        n, c = w_node.shape[1:]
        products = [xs]
        for nu in range(2, len(self._level_sizes) + 1):
            parent, last = getattr(self, f"parent_{nu}"), getattr(self, f"last_{nu}")
            products.append(products[-1].index_select(0, parent) * xs.index_select(0, last))  # [n_nu, N*c]
        monomials = torch.cat(products, dim=0) if len(products) > 1 else xs  # [n_monomials, N*c]
        q = self.coupling_matrix(xs).T @ monomials  # [sum_o M_o K_o, N*c]
        q_blocks = torch.split(q, [m * k for _, m, k in self.blocks], dim=0)
        w_blocks = torch.split(w_node, [k for _, _, k in self.blocks], dim=0)
        outputs = []
        for (_, m, k), q_o, w_o in zip(self.blocks, q_blocks, w_blocks):
            if k == 0:
                outputs.append(xs.new_zeros(m, n * c))
                continue
            outputs.append((q_o.reshape(m, k, n, c) * w_o).sum(1).reshape(m, n * c))  # [M, N*c]
        return torch.cat(outputs, dim=0)

    def contract_fused(self, x: torch.Tensor, w_node: torch.Tensor) -> torch.Tensor:
        """``[N, irreps_out.dim]`` (mul_ir) from ``x`` (mul_ir) and ``w_node [N, K*c]``, by the numba kernels (CPU)."""
        return self.fused(x, w_node)

    def forward(self, x: torch.Tensor, element_onehot: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], self.num_channels
        k = self.fused.num_weights
        if self._weight_names:
            w = torch.cat([self.weights[name] for name in self._weight_names], dim=1)  # [E, K, c]
            w_node = element_onehot @ w.reshape(self.num_elements, k * c)  # [N, K*c]
        else:
            w_node = x.new_zeros(n, 0)
        if self.method == "fused" and x.device.type != "cpu":
            raise ValueError(
                f"cg product basis: method='fused' runs numba kernels on the CPU only, and x is on "
                f"{x.device.type!r}; use method='auto' (the pure-torch 'naive' there) or 'naive'"
            )
        fused = self.method == "fused" or (self.method == "auto" and x.device.type == "cpu")
        if fused and n > 0:
            return self.contract_fused(x, w_node)
        # [d, N*c]: coupling components first, so that each monomial is a row
        blocks = torch.split(x, [mul * dim for mul, dim in self._in_blocks], dim=1)
        xs = torch.cat([b.reshape(n, mul, dim) for b, (mul, dim) in zip(blocks, self._in_blocks)], dim=2)
        xs = xs.permute(2, 0, 1).reshape(self.coupling_dim, n * c)
        out = self.contract_naive(xs, w_node.reshape(n, k, c).transpose(0, 1))  # [sum_o M_o, N*c]
        # [sum_o M_o, N, c] -> mul_ir
        pieces = torch.split(out, [m for _, m, _ in self.blocks], dim=0)
        return torch.cat(
            [p.reshape(p.shape[0], n, c).permute(1, 2, 0).reshape(n, c * p.shape[0]) for p in pieces], dim=1
        )

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}, method={self.method!r}, "
            f"monomials={self.num_monomials}, coupling entries={len(self.terms.coefs)}, "
            f"paths={[(str(ir), nu, k) for ir, nu, k in self.paths]}"
        )
