"""The grid products of backend ``vsh`` as the sparse entries of its bilinear form (CPU kernels).

``out[r_e, n] += v_e * sum_(c < C_p) f1[r1_p + c, n] * f2[r2_p + c, n]`` for every entry ``e`` of
every slot pair ``p``: ``f1 [R1, N]`` and ``f2 [R2, N]`` hold the signals of the slots, one row
per (channel, slot, component), ``out [R, N]`` one row per (channel, output slot), ``v [1, E]``
the nonzero values of the bilinear form ``M`` (weights times constants). A pair feeds only the
outputs its degrees couple to, so ``M`` is about 10 % dense: the entries skip the zeros that the
dense block GEMMs of :class:`~equitensor.ops.backends.vsh.GridProducts` multiply, and the pair
products live only in a scratch row per tile of points instead of a ``[pairs, chunk]`` tensor.

The product is the 4-linear form ``<out, T(f1, f2, v)>``, registered through
:func:`~equitensor.ops.backends.multilinear.define_multilinear_ops` as
``equitensor::vsh_products_contract`` / ``equitensor::vsh_products_input_gradients``: every
derivative of every order is one of the two kernels below, eagerly and under ``torch.compile``.

Tables (``int64``, the order of :data:`TABLES`): per pair ``r1 [P]``, ``r2 [P]`` (first rows
in ``f1``/``f2``), ``components [P]`` (``C_p``), ``start [P + 1]`` (its entries
``start[p] .. start[p + 1]``); per entry ``row [E]`` (output row). Entries are sorted by pair.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from .multilinear import OUT, X1, X2, define_multilinear_ops
from .numba_threads import ThreadedKernel

TABLES = ("r1", "r2", "components", "start", "row")

#: points per tile: a tile's rows of ``f1``, ``f2`` and ``out`` (about 70 rows at L=8) stay in
#: the L2 cache while every pair reads them; a module constant, so the inner loops have a fixed
#: trip count on all but the last tile.
TILE = 256


@numba.njit(inline="always")
def _tile_range(n, it):
    n0 = it * TILE
    return n0, min(TILE, n - n0)


@numba.njit(inline="always")
def _pair_product(f1, f2, r1, r2, components, n0, width, prod):
    """``prod[j] = sum_c f1[r1 + c, n0 + j] * f2[r2 + c, n0 + j]`` for ``j < width``."""
    a, b = f1[r1, n0 : n0 + width], f2[r2, n0 : n0 + width]
    for j in range(width):
        prod[j] = a[j] * b[j]
    for c in range(1, components):
        a, b = f1[r1 + c, n0 : n0 + width], f2[r2 + c, n0 : n0 + width]
        for j in range(width):
            prod[j] += a[j] * b[j]


@numba.njit(cache=True, fastmath=True)
def _forward_tile(f1, f2, v, r1, r2, components, start, row, out, it):
    """Tile ``it`` of ``out`` (overwritten): every entry's value times its pair's product."""
    n0, width = _tile_range(out.shape[1], it)
    for r in range(out.shape[0]):
        o = out[r, n0 : n0 + width]
        for j in range(width):
            o[j] = 0
    prod = np.empty(TILE, dtype=out.dtype)
    for p in range(r1.shape[0]):
        _pair_product(f1, f2, r1[p], r2[p], components[p], n0, width, prod)
        for e in range(start[p], start[p + 1]):
            ve, o = v[e], out[row[e], n0 : n0 + width]
            for j in range(width):
                o[j] += ve * prod[j]


@numba.njit(cache=True, fastmath=True)
def _backward_tile(gout, f1, f2, v, r1, r2, components, start, row, g1, g2, gv, task, it):
    """Tile ``it`` of the gradients of ``<gout, out(f1, f2, v)>``: ``g1``/``g2`` (rows of the
    tile overwritten; a zero-row array skips that gradient) and ``gv [tasks, E]`` (row ``task``
    accumulates; zero rows skip it)."""
    n0, width = _tile_range(gout.shape[1], it)
    need1, need2, needv = g1.shape[0] > 0, g2.shape[0] > 0, gv.shape[0] > 0
    for g in (g1, g2):
        for r in range(g.shape[0]):
            gr = g[r, n0 : n0 + width]
            for j in range(width):
                gr[j] = 0
    prod = np.empty(TILE, dtype=gout.dtype)
    gpair = np.empty(TILE, dtype=gout.dtype)  # the gradient of the pair product
    for p in range(r1.shape[0]):
        for j in range(width):
            gpair[j] = 0
        if needv:  # one pass over each entry's gradient row for both sums
            _pair_product(f1, f2, r1[p], r2[p], components[p], n0, width, prod)
            for e in range(start[p], start[p + 1]):
                ve, go = v[e], gout[row[e], n0 : n0 + width]
                acc = go[0] * 0
                for j in range(width):
                    gpair[j] += ve * go[j]
                    acc += go[j] * prod[j]
                gv[task, e] += acc
        else:
            for e in range(start[p], start[p + 1]):
                ve, go = v[e], gout[row[e], n0 : n0 + width]
                for j in range(width):
                    gpair[j] += ve * go[j]
        for c in range(components[p]):
            if need1:
                ga, b = g1[r1[p] + c, n0 : n0 + width], f2[r2[p] + c, n0 : n0 + width]
                for j in range(width):
                    ga[j] += gpair[j] * b[j]
            if need2:
                gb, a = g2[r2[p] + c, n0 : n0 + width], f1[r1[p] + c, n0 : n0 + width]
                for j in range(width):
                    gb[j] += gpair[j] * a[j]


#: tiles per task of :func:`_backward`: each task owns one row of partial value gradients, so
#: tasks run in parallel without a race and the partial sums stay few.
TILES_PER_TASK = 16


@ThreadedKernel.define(cache=True)
def _forward(f1, f2, v, r1, r2, components, start, row, out):
    for it in numba.prange((out.shape[1] + TILE - 1) // TILE):
        _forward_tile(f1, f2, v, r1, r2, components, start, row, out, it)


@ThreadedKernel.define(cache=True)
def _backward(gout, f1, f2, v, r1, r2, components, start, row, g1, g2, gv):
    tiles = (gout.shape[1] + TILE - 1) // TILE
    for task in numba.prange((tiles + TILES_PER_TASK - 1) // TILES_PER_TASK):
        for it in range(task * TILES_PER_TASK, min(tiles, (task + 1) * TILES_PER_TASK)):
            _backward_tile(gout, f1, f2, v, r1, r2, components, start, row, g1, g2, gv, task, it)


def _tasks(points: int) -> int:
    tiles = (points + TILE - 1) // TILE
    return (tiles + TILES_PER_TASK - 1) // TILES_PER_TASK


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _kernel_tables(tables) -> list[np.ndarray]:
    return [t.numpy() for t in tables]


def _gradients(gout, f1, f2, v, tables, rows1: int, rows2: int, need: tuple[bool, bool, bool]):
    """``(g1 [rows1, N], g2 [rows2, N], gv [1, E])`` of ``<gout, out(f1, f2, v)>``; a gradient not
    in ``need`` comes back with zero rows (and ``f1``/``f2`` may then be ``None``)."""
    n, entries = gout.shape[1], v.shape[-1]
    dtype = gout.dtype
    g1 = torch.empty(rows1 if need[0] else 0, n, dtype=dtype)
    g2 = torch.empty(rows2 if need[1] else 0, n, dtype=dtype)
    gv = torch.zeros(_tasks(n) if need[2] else 0, entries, dtype=dtype)
    absent = torch.empty(0, n, dtype=dtype)
    f1 = absent if f1 is None else f1
    f2 = absent if f2 is None else f2
    _backward(
        _numpy(gout), _numpy(f1), _numpy(f2), _numpy(v).reshape(-1), *_kernel_tables(tables), g1.numpy(), g2.numpy(), gv.numpy()
    )
    return g1, g2, gv.sum(0, keepdim=True)


def _contract(target, sources, rows, width, tables):
    """CPU implementation of ``equitensor::vsh_products_contract``: slot ``target`` ``[rows, width]``
    from the other three (slot order ``out, f1, f2, v``)."""
    a, b, c = sources
    if target == OUT:
        out = torch.empty(rows, width, dtype=a.dtype)
        _forward(_numpy(a), _numpy(b), _numpy(c).reshape(-1), *_kernel_tables(tables), out.numpy())
        return out
    if target == X1:  # a = out, b = f2, c = v
        return _gradients(a, None, b, c, tables, rows, 0, (True, False, False))[0]
    if target == X2:  # a = out, b = f1, c = v
        return _gradients(a, b, None, c, tables, 0, rows, (False, True, False))[1]
    return _gradients(a, b, c, torch.ones(1, width, dtype=a.dtype), tables, 0, 0, (False, False, True))[2]


def _input_gradients(grad_out, f1, f2, v, tables):
    """CPU implementation of ``equitensor::vsh_products_input_gradients``."""
    return _gradients(grad_out, f1, f2, v, tables, f1.shape[0], f2.shape[0], (True, True, True))


#: ``equitensor::vsh_products_contract`` / ``equitensor::vsh_products_input_gradients``
#: (slots ``out [R, N], f1 [R1, N], f2 [R2, N], v [1, E]``; tables :data:`TABLES`).
VSH_PRODUCT_OPS = define_multilinear_ops("vsh_products", _contract, _input_gradients)
