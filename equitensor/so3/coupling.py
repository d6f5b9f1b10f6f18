"""Generalised Clebsch-Gordan coupling ("U matrices") for MACE's symmetric contraction (pure numpy).

For input irreps ``V = ir_1 + ... + ir_n`` (one copy each, total dimension ``d``) and a target
irrep ``L``, the equivariant maps ``Sym^nu(V) -> L`` form a vector space. A basis of it is a
tensor ``U [2L+1, d, ..., d (nu times), K]`` with

    out[M] = sum_{i_1..i_nu, k} U[M, i_1, ..., i_nu, k] w_k x_{i_1} ... x_{i_nu},

which is the node update of MACE's product basis (Batatia et al. 2022, eqs. 10-11) for one
channel, with ``w_k`` the learnable (element- and channel-dependent) weights.

Construction (:func:`symmetric_coupling_basis`):

1. every coupling path ``((ir_a x ir_b) -> ir_ab) x ir_c -> ... -> L`` is built left to right
   with real CG tensors (``so3.clebsch_gordan``, e3nn's phases, ``component`` normalisation);
2. each path is symmetrised over the ``nu`` input slots (``x^{(x) nu}`` is symmetric, so only the
   symmetric part of ``U`` acts);
3. Gram-Schmidt in the fixed path order keeps an orthogonal basis of their span, each element
   scaled to Frobenius norm ``sqrt(2L+1)`` (the norm of one unsymmetrised ``component`` path).

The result is canonical (no SVD, no random numbers), so saved weights stay meaningful across
machines. mace-torch keeps the raw, linearly dependent paths instead; its weights map onto
ours by a fixed linear map (see ``docs/models.md``).

:func:`monomial_coupling` rewrites the same basis on the sorted monomials
``x_{i_1} ... x_{i_nu}`` (``i_1 <= ... <= i_nu``), folding the permutation multiplicities in,
which is what the ``cg`` product basis multiplies with; :func:`symmetric_contraction_terms`
gathers the tables of every output block and order into one monomial chain and one (dense and
sparse) coupling matrix.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import numpy as np

from . import s2grid
from ._cache import read_only as _read_only
from .wigner import clebsch_gordan

#: an irrep as ``(l, parity)`` with parity +1 (even) or -1 (odd).
IrrepKey = tuple[int, int]

_RANK_TOL = 1e-9
#: coupling entries below this (float64 round-off of exact zeros) are dropped from sparse lists.
_ZERO = 1e-14


@functools.cache
def _coupling_paths(irreps_in: tuple[IrrepKey, ...], nu: int) -> tuple[tuple[IrrepKey, np.ndarray], ...]:
    """Every left-to-right coupling path of ``nu`` inputs: ``(ir, tensor [2l+1, d, ..., d])`` (cached)."""
    dims = [2 * l + 1 for l, _ in irreps_in]
    offsets = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    d = int(offsets[-1])
    if nu == 1:
        paths = []
        for a, (l, p) in enumerate(irreps_in):
            t = np.zeros((2 * l + 1, d))
            t[:, offsets[a] : offsets[a + 1]] = np.eye(2 * l + 1)
            paths.append(((l, p), _read_only(t)))
        return tuple(paths)
    return tuple(
        path
        for ir_left, left in _coupling_paths(irreps_in, nu - 1)
        for path in _couple_right(irreps_in, offsets, ir_left, left, target=None)
    )


def _couple_right(irreps_in, offsets, ir_left, left, target):
    """Couple the path tensor ``left [2l+1, d..]`` with one more input slot; yield ``(ir, tensor)``."""
    l_left, p_left = ir_left
    d = int(offsets[-1])
    for b, (l_b, p_b) in enumerate(irreps_in):
        for l_out in range(abs(l_left - l_b), l_left + l_b + 1):
            ir_out = (l_out, p_left * p_b)
            if target is not None and ir_out != target:
                continue
            cg = clebsch_gordan(l_left, l_b, l_out)  # [2l_left+1, 2l_b+1, 2l_out+1]
            t = np.tensordot(cg, left, axes=([0], [0]))  # [2l_b+1, 2l_out+1, d..]
            full = np.zeros(t.shape[1:] + (d,))  # [2l_out+1, d.., d]
            full[..., offsets[b] : offsets[b + 1]] = np.moveaxis(t, 0, -1)
            yield ir_out, full


@functools.cache
def _monomial_binning(d: int, nu: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted monomials ``[n, nu]``, the monomial of every flat index of ``d^nu`` and multiplicities ``[n]``."""
    monos = sorted_monomials(d, nu)
    lookup = {tuple(row): i for i, row in enumerate(monos.tolist())}
    grid = np.array(list(itertools.product(range(d), repeat=nu)), dtype=np.int64).reshape(-1, nu)
    bins = np.array([lookup[tuple(sorted(row))] for row in grid.tolist()], dtype=np.int64)
    counts = np.bincount(bins, minlength=len(monos)).astype(np.float64)
    return _read_only(monos), _read_only(bins), _read_only(counts)


@functools.cache
def _monomial_basis(irreps_in: tuple[IrrepKey, ...], ir_out: IrrepKey, nu: int) -> np.ndarray:
    """The basis of :func:`symmetric_coupling_basis` as monomial tables ``[n_all, 2L+1, K]``.

    A symmetric tensor ``S`` is stored by its values summed over each monomial's index
    arrangements (``table[n] = count[n] * S[sorted index n]``); the Frobenius inner product is
    then ``sum_n table1[n] table2[n] / count[n]``.
    """
    dims = [2 * l + 1 for l, _ in irreps_in]
    offsets = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    d = int(offsets[-1])
    m = 2 * ir_out[0] + 1
    monos, bins, counts = _monomial_binning(d, nu)
    if nu == 1:
        raw = [t for ir, t in _coupling_paths(irreps_in, 1) if ir == ir_out]
    else:
        raw = [
            t
            for ir_left, left in _coupling_paths(irreps_in, nu - 1)
            for _, t in _couple_right(irreps_in, offsets, ir_left, left, target=ir_out)
        ]
    if not raw:
        return _read_only(np.zeros((len(monos), m, 0)))
    flat = np.stack([t.reshape(m, -1) for t in raw])  # [P, M, d^nu]
    tables = np.zeros((len(raw), m, len(monos)))
    for k in range(len(raw)):
        for i in range(m):
            tables[k, i] = np.bincount(bins, weights=flat[k, i], minlength=len(monos))
    # orthonormal coordinates of the symmetrised paths: table / sqrt(count)
    vectors = (tables / np.sqrt(counts)).reshape(len(raw), -1)
    basis: list[np.ndarray] = []
    for v in vectors:
        for _ in range(2):  # classical Gram-Schmidt, twice for orthogonality
            for b in basis:
                v = v - (b @ v) * b
        norm = np.linalg.norm(v)
        if norm > _RANK_TOL:
            basis.append(v / norm)
    if not basis:
        return _read_only(np.zeros((len(monos), m, 0)))
    q = np.stack(basis, axis=-1).reshape(m, len(monos), len(basis)) * math.sqrt(m)
    return _read_only(np.moveaxis(q, 1, 0) * np.sqrt(counts)[:, None, None])


@functools.cache
def symmetric_coupling_basis(irreps_in: tuple[IrrepKey, ...], ir_out: IrrepKey, nu: int) -> np.ndarray:
    """Basis of the equivariant maps ``Sym^nu(irreps_in) -> ir_out``.

    Args:
        irreps_in: the input irreps, one copy each, as ``(l, parity)`` tuples (e.g.
            ``((0, 1), (1, -1), (2, 1), (3, -1))`` for MACE's ``0e+1o+2e+3o``).
        ir_out: target irrep ``(L, parity)``.
        nu: correlation order (number of factors), >= 1.

    Returns:
        read-only float64 array ``[2L+1, d, ..., d (nu times), K]`` (``K`` may be 0), symmetric in
        the ``d`` axes, columns mutually orthogonal with Frobenius norm ``sqrt(2L+1)``.
    """
    irreps_in, ir_out = _canonical(irreps_in, ir_out, nu)
    d = sum(2 * l + 1 for l, _ in irreps_in)
    table = _monomial_basis(irreps_in, ir_out, nu)  # [n, M, K]
    _, bins, counts = _monomial_binning(d, nu)
    u = table[bins] / counts[bins][:, None, None]  # [d^nu, M, K]
    return _read_only(np.moveaxis(u, 1, 0).reshape((table.shape[1],) + (d,) * nu + (table.shape[2],)))


def _canonical(irreps_in, ir_out, nu):
    if nu < 1:
        raise ValueError(f"correlation order nu must be >= 1, got {nu}")
    return tuple((int(l), int(p)) for l, p in irreps_in), (int(ir_out[0]), int(ir_out[1]))


def sorted_monomials(d: int, nu: int) -> np.ndarray:
    """All index tuples ``i_1 <= ... <= i_nu`` in ``range(d)``, lexicographic: ``[n, nu]`` int64."""
    return np.array(list(itertools.combinations_with_replacement(range(d), nu)), dtype=np.int64).reshape(
        -1, nu
    )


@functools.cache
def monomial_coupling(
    irreps_in: tuple[IrrepKey, ...], ir_out: IrrepKey, nu: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`symmetric_coupling_basis` on sorted monomials.

    Returns:
        ``(monomials [n, nu], table [n, 2L+1, K])`` such that for any ``x [d]``
        ``sum_{i..} U[M, i.., k] x_i.. == sum_n table[n, M, k] * prod_j x[monomials[n, j]]``.
        Only monomials with a non-zero row are returned.
    """
    irreps_in, ir_out = _canonical(irreps_in, ir_out, nu)
    d = sum(2 * l + 1 for l, _ in irreps_in)
    table = _monomial_basis(irreps_in, ir_out, nu)
    monos, _, _ = _monomial_binning(d, nu)
    nonzero = np.abs(table).reshape(len(monos), -1).max(axis=1, initial=0.0) > _ZERO
    return _read_only(monos[nonzero]), _read_only(table[nonzero])


class SymmetricContractionTerms(NamedTuple):
    """Plain-data description of a whole symmetric contraction (every output block, every order).

    Monomials are numbered ``0 .. n-1``: ``0 .. d-1`` are the inputs ``x_i`` themselves, every
    further monomial ``t`` is ``monomial[parent[t]] * x[last[t]]`` (``parent[t] < t``,
    ``last[t] < d``), so evaluating them in index order needs each factor once. Only the
    monomials that some coupling table uses, and their parents, are kept.

    The outputs ``q [sum_o (2L_o+1) K_o]`` (block ``o`` laid out ``[2L_o+1, K_o]``, ``K_o`` the
    paths of orders 1, 2, ... in turn) are ``q = coupling.T @ monomials``; the same matrix as a
    sparse list is ``q[rows[e]] += coefs[e] * monomial[monomials[e]]`` (sorted by row).
    """

    d: int
    parent: np.ndarray  # [n] int64 (-1 for the inputs)
    last: np.ndarray  # [n] int64
    coupling: np.ndarray  # [n, sum_o M_o K_o] float64
    rows: np.ndarray  # [E] int64, output row of each nonzero coupling entry
    monomials: np.ndarray  # [E] int64
    coefs: np.ndarray  # [E] float64
    blocks: tuple[tuple[int, tuple[int, ...]], ...]  # per output block: (2L+1, (K_1, K_2, ...))


@functools.cache
def symmetric_contraction_terms(
    irreps_in: tuple[IrrepKey, ...], irreps_out: tuple[IrrepKey, ...], correlation: int
) -> SymmetricContractionTerms:
    """The monomials and coupling entries of ``sum_nu U_nu(L) x^nu`` for every ``L`` in ``irreps_out``.

    Built from :func:`monomial_coupling` for every (output block, order ``1..correlation``);
    see :class:`SymmetricContractionTerms` for the layout. Cached; arrays read-only.
    """
    irreps_in = tuple((int(l), int(p)) for l, p in irreps_in)
    irreps_out = tuple((int(l), int(p)) for l, p in irreps_out)
    d = sum(2 * l + 1 for l, _ in irreps_in)
    tables = {
        (o, nu): monomial_coupling(irreps_in, ir, nu)
        for o, ir in enumerate(irreps_out)
        for nu in range(1, correlation + 1)
    }
    return contraction_terms(d, [2 * l + 1 for l, _ in irreps_out], correlation, tables)


def contraction_terms(d: int, out_dims, correlation: int, tables) -> SymmetricContractionTerms:
    """Assemble :class:`SymmetricContractionTerms` from per-(block, order) monomial tables.

    Args:
        d: number of inputs ``x_i``.
        out_dims: ``2L+1`` of every output block.
        correlation: highest order.
        tables: ``{(o, nu): (monomials [n, nu] sorted, table [n, 2L_o+1, K])}`` for every block
            ``o`` and order ``nu = 1..correlation`` (``K`` may be 0), as :func:`monomial_coupling`.
    """
    orders = range(1, correlation + 1)
    # monomials needed at each level: the used ones plus the parents of the next level's
    levels: dict[int, set[tuple[int, ...]]] = {nu: set() for nu in orders}
    for (_, nu), (monos, table) in tables.items():
        if table.shape[-1]:
            levels[nu].update(map(tuple, np.asarray(monos).tolist()))
    for nu in range(correlation, 1, -1):
        levels[nu - 1].update(m[:-1] for m in levels[nu])
    levels[1] = {(i,) for i in range(d)}  # level 1 is x itself
    index: dict[tuple[int, ...], int] = {}
    parent, last = [], []
    for nu in orders:
        for mono in sorted(levels[nu]):
            index[mono] = len(parent)
            parent.append(index[mono[:-1]] if nu > 1 else -1)
            last.append(mono[-1])
    blocks, columns = [], []
    for o, m in enumerate(out_dims):
        ks = tuple(tables[(o, nu)][1].shape[-1] for nu in orders)
        block = np.zeros((len(parent), m, sum(ks)))
        k0 = 0
        for nu, k in zip(orders, ks):
            monos, table = tables[(o, nu)]
            if k:
                block[[index[tuple(mono)] for mono in np.asarray(monos).tolist()], :, k0 : k0 + k] = table
            k0 += k
        columns.append(block.reshape(len(parent), m * sum(ks)))
        blocks.append((m, ks))
    coupling = np.ascontiguousarray(np.concatenate(columns, axis=1))
    rows, monomials = np.nonzero(np.abs(coupling.T) > _ZERO)  # row-major: sorted by output row
    return SymmetricContractionTerms(
        d=d,
        parent=_read_only(np.array(parent, dtype=np.int64)),
        last=_read_only(np.array(last, dtype=np.int64)),
        coupling=_read_only(coupling),
        rows=_read_only(rows.astype(np.int64)),
        monomials=_read_only(monomials.astype(np.int64)),
        coefs=_read_only(coupling[monomials, rows]),
        blocks=tuple(blocks),
    )


@functools.cache
def gaunt_power_terms(degrees_in: tuple[int, ...], degrees_out: tuple[int, ...], correlation: int):
    """The Gaunt product basis ``P_L(f^nu)`` as monomial terms (one path per output block and order).

    With ``f = sum_i x_i Y_i`` (``x`` the coefficients of the real harmonics of ``degrees_in``,
    in that order, orthonormal on the sphere as in :mod:`equitensor.so3.s2grid`),
    ``P_L(f^nu)[M] = sum_n table[n, M] prod_j x[monomial n, j]`` with
    ``table[n, M] = count(n) * integral(Y_{i_1} ... Y_{i_nu} Y_{L,M})``, computed exactly by the
    Gauss-Legendre quadrature that the ``gaunt_grid`` product basis uses. Returns
    :class:`SymmetricContractionTerms` whose blocks have ``K = 1`` for every order with a
    nonzero projection (else 0). Cached; arrays read-only.
    """
    lmax_in, lmax_out = max(degrees_in), max(degrees_out)
    res_beta, res_alpha = s2grid.exact_resolution(correlation * lmax_in + lmax_out)
    lmax = max(lmax_in, lmax_out)
    harmonics = s2grid.harmonics_on_grid(lmax, res_beta, res_alpha)  # [G, (lmax+1)^2]
    project = s2grid.projection_on_grid(lmax, res_beta, res_alpha)  # [G, (lmax+1)^2]
    values = harmonics[:, np.concatenate([np.arange(l * l, (l + 1) ** 2) for l in degrees_in])].T  # [d, G]
    d = values.shape[0]
    tables = {}
    for nu in range(1, correlation + 1):
        monos, _, counts = _monomial_binning(d, nu)
        products = np.prod(values[monos], axis=1) * counts[:, None]  # [n, G]
        for o, l in enumerate(degrees_out):
            table = products @ project[:, l * l : (l + 1) ** 2]  # [n, 2l+1]
            used = np.abs(table).max(axis=1, initial=0.0) > _ZERO
            k = int(used.any())
            tables[(o, nu)] = (monos[used], table[used][:, :, None] if k else np.zeros((0, 2 * l + 1, 0)))
    return contraction_terms(d, [2 * l + 1 for l in degrees_out], correlation, tables)
