"""Backend ``vsh`` on the CPU: lift, grid products and projection fused per tile of samples.

For a tile of ``T`` samples the kernels sample the inputs on the grid (the lift tables of
:class:`~equitensor.ops.backends.vsh.VSHBackend`), form the products of the sparse entries of the
bilinear form and project the grid sums onto the output, all in per-thread scratch arrays that
stay in the cache; only the inputs, the weights and the output touch main memory (the signals of
a whole batch are many times larger than its inputs and outputs, and moving them is what the
unfused execution spends much of its time on).

Within a tile, the signals are rows ``(slot, channel, component)`` of ``T * H`` points ordered
``(sample, grid point)``; the grid sums rows ``(output slot, channel)`` in the same order. On such
rows the product is ``S[row_e] += v_e * sum_(c < C_p) F1[r1_p + c] * F2[r2_p + c]`` for every
entry ``e`` of every slot pair ``p``; ``v`` holds the nonzero values of the bilinear form (weights
times constants), ``[1, E]`` for shared weights or ``[Z, E]`` per sample.

The product is the 4-linear form ``<out, T(x1, x2, v)>`` (lift and projection are linear),
registered through :func:`~equitensor.ops.backends.multilinear.define_multilinear_ops` as
``equitensor::vsh_fused_contract`` / ``equitensor::vsh_fused_input_gradients``: every derivative
of every order is one of the two kernels below, eagerly and under ``torch.compile``.

Tables (the order of :data:`TABLES`): ``int64`` per pair ``r1, r2, components, start`` and per
entry ``row`` (entries sorted by pair); per input column of each input ``in`` (the column),
``row`` (its unit's first signal row), ``comp`` (signal components) and ``base`` (offset into the
flat lift table); per output column ``row`` (its grid-sum row), ``out`` (the column) and ``base``;
``sizes`` ``[rows of F1, rows of F2, rows of S, H, T]``; then the flat float tables (the data's
dtype): per degree the lift tables ``[2l + 1, C, H]`` of each input and the projection tables
``[2l + 1, H]`` (``Y_lm`` times the quadrature weight). Columns of an input or the output that no
instruction uses have no entry: their gradient or value is zero.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from .multilinear import OUT, X1, X2, define_multilinear_ops
from .numba_threads import ThreadedKernel

TABLES = (
    "r1", "r2", "components", "start", "row",
    "lift1_in", "lift1_row", "lift1_comp", "lift1_base",
    "lift2_in", "lift2_row", "lift2_comp", "lift2_base",
    "project_row", "project_out", "project_base",
    "sizes", "lift1_table", "lift2_table", "project_table",
)  # fmt: skip

#: scratch floats per thread (all signal rows of a tile, forward or backward) are kept about this
#: size, so that a tile's signals stay in the L2 cache between lift, products and projection.
SCRATCH_FLOATS = 1 << 17


def tile_samples(scratch_rows: int, points: int) -> int:
    """Samples per tile: ``scratch_rows`` rows of ``T * points`` floats fit :data:`SCRATCH_FLOATS`."""
    return int(max(1, min(64, SCRATCH_FLOATS // max(1, scratch_rows * points))))


# Indices into the tables and rows below are slices plus a ``range`` index: numba then knows the
# index is not negative and emits no wraparound select, which would keep LLVM from vectorising
# the loops (``table[base + h]`` with ``base`` read from an array runs 10x slower).


@numba.njit(cache=True)
def _zero_rows(rows, n):
    """``rows[:, :n] = 0``."""
    for r in range(rows.shape[0]):
        row = rows[r]
        for i in range(n):
            row[i] = 0


@numba.njit(cache=True, fastmath=True)
def _lift(x, t0, width, col_in, col_row, col_comp, col_base, table, points, signals):
    """``signals[row_j + c, t * H + h] = sum_j table[base_j + c * H + h] * x[t0 + t, in_j]`` over
    the input columns ``j`` (rows overwritten)."""
    _zero_rows(signals, width * points)
    for t in range(width):
        for j in range(col_in.shape[0]):
            a = x[t0 + t, col_in[j]]
            for c in range(col_comp[j]):
                base = col_base[j] + c * points
                tab = table[base : base + points]
                seg = signals[col_row[j] + c, t * points : (t + 1) * points]
                for h in range(points):
                    seg[h] += a * tab[h]


@numba.njit(cache=True, fastmath=True)
def _lift_transposed(grad_signals, t0, width, col_in, col_row, col_comp, col_base, table, points, grad_x, zero):
    """The adjoint of :func:`_lift`: ``grad_x[t0 + t, in_j] += sum_(c, h) table[...] grad_signals[...]``."""
    for t in range(width):
        for j in range(col_in.shape[0]):
            acc = zero
            for c in range(col_comp[j]):
                base = col_base[j] + c * points
                tab = table[base : base + points]
                seg = grad_signals[col_row[j] + c, t * points : (t + 1) * points]
                for h in range(points):
                    acc += tab[h] * seg[h]
            grad_x[t0 + t, col_in[j]] += acc


@numba.njit(cache=True, fastmath=True)
def _project(sums, t0, width, col_row, col_out, col_base, table, points, out, zero):
    """``out[t0 + t, out_j] = sum_h table[base_j + h] * sums[row_j, t * H + h]`` over the output columns ``j``."""
    for t in range(width):
        for j in range(col_out.shape[0]):
            tab = table[col_base[j] : col_base[j] + points]
            seg = sums[col_row[j], t * points : (t + 1) * points]
            acc = zero
            for h in range(points):
                acc += tab[h] * seg[h]
            out[t0 + t, col_out[j]] = acc


@numba.njit(cache=True, fastmath=True)
def _project_transposed(grad_out, t0, width, col_row, col_out, col_base, table, points, grad_sums):
    """The adjoint of :func:`_project` (``grad_sums`` overwritten)."""
    _zero_rows(grad_sums, width * points)
    for t in range(width):
        for j in range(col_out.shape[0]):
            a = grad_out[t0 + t, col_out[j]]
            tab = table[col_base[j] : col_base[j] + points]
            seg = grad_sums[col_row[j], t * points : (t + 1) * points]
            for h in range(points):
                seg[h] += a * tab[h]


@numba.njit(cache=True, fastmath=True)
def _pair_product(f1, f2, r1, r2, components, n, prod):
    """``prod[j] = sum_c f1[r1 + c, j] * f2[r2 + c, j]`` for ``j < n``."""
    a, b = f1[r1], f2[r2]
    for j in range(n):
        prod[j] = a[j] * b[j]
    for c in range(1, components):
        a, b = f1[r1 + c], f2[r2 + c]
        for j in range(n):
            prod[j] += a[j] * b[j]


@numba.njit(cache=True, fastmath=True)
def _add_scaled_per_sample(target, source, v, e, t0, width, points):
    """``target[t * H + h] += v[t0 + t, e] * source[t * H + h]`` for the tile's samples ``t``."""
    for t in range(width):
        ve = v[t0 + t, e]
        tseg, sseg = target[t * points : (t + 1) * points], source[t * points : (t + 1) * points]
        for h in range(points):
            tseg[h] += ve * sseg[h]


@numba.njit(cache=True, fastmath=True)
def _products(f1, f2, v, r1, r2, components, start, row, t0, width, points, sums, prod):
    """``sums[:, :width * H]`` (overwritten): every entry's value times its pair's product; ``v``
    is ``[1, E]`` (shared) or ``[Z, E]`` (per sample: row ``t0 + t`` for sample ``t`` of the tile)."""
    n = width * points
    per_sample = v.shape[0] > 1
    _zero_rows(sums, n)
    for p in range(r1.shape[0]):
        _pair_product(f1, f2, r1[p], r2[p], components[p], n, prod)
        for e in range(start[p], start[p + 1]):
            if per_sample:
                _add_scaled_per_sample(sums[row[e]], prod, v, e, t0, width, points)
            else:
                ve, s = v[0, e], sums[row[e]]
                for j in range(n):
                    s[j] += ve * prod[j]


@numba.njit(cache=True, fastmath=True)
def _products_backward(gsums, f1, f2, v, r1, r2, components, start, row, t0, width, points, g1, g2, gv, gv_row,
                       need1, need2, needv, prod, gpair, zero):  # fmt: skip
    """Gradients of ``<gsums, products(f1, f2, v)>`` on the tile: ``g1``/``g2`` overwritten (when
    needed), ``gv`` accumulated (when needed) into row ``gv_row`` (shared ``v``) or ``t0 + t``
    (per-sample ``v``)."""
    n = width * points
    per_sample = v.shape[0] > 1
    if need1:
        _zero_rows(g1, n)
    if need2:
        _zero_rows(g2, n)
    for p in range(r1.shape[0]):
        for j in range(n):
            gpair[j] = 0
        if needv:
            _pair_product(f1, f2, r1[p], r2[p], components[p], n, prod)
        for e in range(start[p], start[p + 1]):
            go = gsums[row[e]]
            if per_sample:
                _add_scaled_per_sample(gpair, go, v, e, t0, width, points)
                if needv:
                    for t in range(width):
                        gseg, prseg = go[t * points : (t + 1) * points], prod[t * points : (t + 1) * points]
                        acc = zero
                        for h in range(points):
                            acc += gseg[h] * prseg[h]
                        gv[t0 + t, e] += acc
            else:
                ve = v[0, e]
                if needv:
                    acc = zero
                    for j in range(n):
                        gpair[j] += ve * go[j]
                        acc += go[j] * prod[j]
                    gv[gv_row, e] += acc
                else:
                    for j in range(n):
                        gpair[j] += ve * go[j]
        for c in range(components[p]):
            if need1:
                ga, b = g1[r1[p] + c], f2[r2[p] + c]
                for j in range(n):
                    ga[j] += gpair[j] * b[j]
            if need2:
                gb, a = g2[r2[p] + c], f1[r1[p] + c]
                for j in range(n):
                    gb[j] += gpair[j] * a[j]


def _tiles(samples: int, tile: int) -> int:
    return (samples + tile - 1) // tile


def _tasks(samples: int, tile: int) -> int:
    """Parallel tasks of the backward (each owns one row of partial value gradients)."""
    return min(_tiles(samples, tile), 64)


@ThreadedKernel.define(cache=True, fastmath=True)
def _forward(x1, x2, v, r1, r2, components, start, row,
             l1_in, l1_row, l1_comp, l1_base, l2_in, l2_row, l2_comp, l2_base,
             p_row, p_out, p_base, sizes, lift1, lift2, project, zero, out):  # fmt: skip
    """``out [Z, D_out]`` (zero-filled by the caller) from ``x1 [Z, D1]``, ``x2 [Z, D2]``, ``v [1 or Z, E]``."""
    rows1, rows2, rows_out, points, tile = sizes[0], sizes[1], sizes[2], sizes[3], sizes[4]
    samples = x1.shape[0]
    tiles = (samples + tile - 1) // tile
    tasks = min(tiles, 64)
    per_task = (tiles + tasks - 1) // max(1, tasks)
    for task in numba.prange(tasks):  # scratch allocated once per task, reused by its tiles
        f1 = np.empty((rows1, tile * points), dtype=x1.dtype)
        f2 = np.empty((rows2, tile * points), dtype=x1.dtype)
        sums = np.empty((rows_out, tile * points), dtype=x1.dtype)
        prod = np.empty(tile * points, dtype=x1.dtype)
        for it in range(task * per_task, min(tiles, (task + 1) * per_task)):
            t0 = it * tile
            width = min(tile, samples - t0)
            _lift(x1, t0, width, l1_in, l1_row, l1_comp, l1_base, lift1, points, f1)
            _lift(x2, t0, width, l2_in, l2_row, l2_comp, l2_base, lift2, points, f2)
            _products(f1, f2, v, r1, r2, components, start, row, t0, width, points, sums, prod)
            _project(sums, t0, width, p_row, p_out, p_base, project, points, out, zero)


@ThreadedKernel.define(cache=True, fastmath=True)
def _backward(gout, x1, x2, v, r1, r2, components, start, row,
              l1_in, l1_row, l1_comp, l1_base, l2_in, l2_row, l2_comp, l2_base,
              p_row, p_out, p_base, sizes, lift1, lift2, project, zero, need1, need2, needv, g1, g2, gv):  # fmt: skip
    """Gradients of ``<gout, out(x1, x2, v)>``: ``g1``, ``g2`` (zero-filled by the caller) and
    ``gv`` (zero-filled; ``[tasks, E]`` for a shared ``v``, row ``task`` accumulating, or ``[Z, E]``
    per sample) as ``need1``/``need2``/``needv`` ask."""
    rows1, rows2, rows_out, points, tile = sizes[0], sizes[1], sizes[2], sizes[3], sizes[4]
    samples = gout.shape[0]
    tiles = (samples + tile - 1) // tile
    tasks = min(tiles, 64)  # as _tasks: a shared v's gradient has one row per task
    per_task = (tiles + tasks - 1) // max(1, tasks)
    for task in numba.prange(tasks):
        f1 = np.empty((rows1, tile * points), dtype=gout.dtype)
        f2 = np.empty((rows2, tile * points), dtype=gout.dtype)
        gf1 = np.empty((rows1 if need1 else 0, tile * points), dtype=gout.dtype)
        gf2 = np.empty((rows2 if need2 else 0, tile * points), dtype=gout.dtype)
        gsums = np.empty((rows_out, tile * points), dtype=gout.dtype)
        prod = np.empty(tile * points, dtype=gout.dtype)
        gpair = np.empty(tile * points, dtype=gout.dtype)
        for it in range(task * per_task, min(tiles, (task + 1) * per_task)):
            t0 = it * tile
            width = min(tile, samples - t0)
            _project_transposed(gout, t0, width, p_row, p_out, p_base, project, points, gsums)
            if need2 or needv:
                _lift(x1, t0, width, l1_in, l1_row, l1_comp, l1_base, lift1, points, f1)
            if need1 or needv:
                _lift(x2, t0, width, l2_in, l2_row, l2_comp, l2_base, lift2, points, f2)
            _products_backward(
                gsums, f1, f2, v, r1, r2, components, start, row, t0, width, points, gf1, gf2, gv, task,
                need1, need2, needv, prod, gpair, zero,
            )  # fmt: skip
            if need1:
                _lift_transposed(gf1, t0, width, l1_in, l1_row, l1_comp, l1_base, lift1, points, g1, zero)
            if need2:
                _lift_transposed(gf2, t0, width, l2_in, l2_row, l2_comp, l2_base, lift2, points, g2, zero)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _zero(dtype: torch.dtype):
    """A zero of ``dtype`` for the kernels' sums (an ``int`` zero would make them float64)."""
    return torch.zeros((), dtype=dtype).numpy()[()]


def _kernel_tables(tables) -> list[np.ndarray]:
    return [_numpy(t) for t in tables]


def _gradients(gout, x1, x2, v, tables, shapes, need: tuple[bool, bool, bool]):
    """``(g1, g2, gv)`` of ``<gout, out(x1, x2, v)>`` (``shapes`` of ``x1``, ``x2``; ``gv`` shaped
    like ``v``: ``[1, E]`` shared, ``[Z, E]`` per sample); a gradient not in ``need`` comes back
    empty, and its input may then be ``None``."""
    sizes = tables[TABLES.index("sizes")]
    samples, dtype = gout.shape[0], gout.dtype
    shared = v.shape[0] == 1
    g1 = torch.zeros(shapes[0] if need[0] else (0, 0), dtype=dtype)
    g2 = torch.zeros(shapes[1] if need[1] else (0, 0), dtype=dtype)
    gv_rows = (_tasks(samples, int(sizes[4])) if shared else samples) if need[2] else 0
    gv = torch.zeros(gv_rows, v.shape[-1], dtype=dtype)
    absent = torch.zeros(samples, 0, dtype=dtype)
    x1 = absent if x1 is None else x1
    x2 = absent if x2 is None else x2
    _backward(
        _numpy(gout), _numpy(x1), _numpy(x2), _numpy(v), *_kernel_tables(tables),
        _zero(dtype), need[0], need[1], need[2], g1.numpy(), g2.numpy(), gv.numpy(),
    )  # fmt: skip
    return g1, g2, (gv.sum(0, keepdim=True) if shared else gv)


def _contract(target, sources, rows, width, tables):
    """CPU implementation of ``equitensor::vsh_fused_contract``: slot ``target`` ``[rows, width]``
    from the other three (slot order ``out, x1, x2, v``)."""
    a, b, c = sources
    if target == OUT:
        out = torch.zeros(rows, width, dtype=a.dtype)
        _forward(_numpy(a), _numpy(b), _numpy(c), *_kernel_tables(tables), _zero(a.dtype), out.numpy())
        return out
    if target == X1:  # a = out, b = x2, c = v
        return _gradients(a, None, b, c, tables, ((rows, width), None), (True, False, False))[0]
    if target == X2:  # a = out, b = x1, c = v
        return _gradients(a, b, None, c, tables, (None, (rows, width)), (False, True, False))[1]
    return _gradients(a, b, c, torch.ones(rows, width, dtype=a.dtype), tables, (None, None), (False, False, True))[2]


def _input_gradients(grad_out, x1, x2, v, tables):
    """CPU implementation of ``equitensor::vsh_fused_input_gradients``."""
    return _gradients(grad_out, x1, x2, v, tables, (x1.shape, x2.shape), (True, True, True))


#: ``equitensor::vsh_fused_contract`` / ``equitensor::vsh_fused_input_gradients`` (slots
#: ``out [Z, D_out], x1 [Z, D1], x2 [Z, D2], v [1 or Z, E]``; tables :data:`TABLES`).
VSH_FUSED_OPS = define_multilinear_ops("vsh_fused", _contract, _input_gradients)
