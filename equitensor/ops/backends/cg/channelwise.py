"""Method ``channelwise``: ``uvu`` paths whose second input has one channel, as a numba kernel.

This is MACE's convolution product, ``x1 [128 channels] ⊗ Y(edge) [one channel] -> one output
block per path``, with per-edge weights ``w[u]`` per path. For one sample and one path,

    out[u, k] += w[u] * sum_i x1[u, i] * C[i, k],    C[i, k] = sum_j cg[i, j, k] * x2[j],

so the CG block is first contracted with the sample's ``x2`` into a small ``(2l1+1) x (2l3+1)``
matrix, and every channel then costs one small mat-vec. The mat-vecs run vectorised over the
channels on rows transposed to ir_mul in per-thread scratch (or, for contractions over a graph
that re-read node rows per edge, on node arrays transposed once up front); public tensors stay
mul_ir, and no per-sample intermediate tensor is formed.

The same kernel runs *message passing* fused: ``x1`` and ``out`` may be node-indexed (``x1``
read at each edge's sender, ``out`` accumulated at its receiver) while ``x2`` and ``w`` are
edge-indexed, so the per-edge messages ``[n_edges, dim_out]`` never exist. The plain per-sample
product is the special case where every index is the identity.

Autograd: the product is the 4-linear form of :mod:`..multilinear`; the custom ops
``equitensor::cg_channelwise_contract`` ("contract three slots into the fourth", any slot) and
``equitensor::cg_channelwise_input_gradients`` run forward, backward and every higher derivative
on this kernel, eagerly and under ``torch.compile``. Writes are race-free and deterministic: a contraction into
a node-indexed slot runs in parallel over nodes, visiting each node's edges in CSR order; a
contraction into an edge-indexed slot runs in parallel over edges. CPU only.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from .... import so3
from ....irreps import ir_mul_permutation
from ...descriptor import TensorProductDescriptor
from ..multilinear import OUT, SLOTS, X1, X2, W, define_multilinear_ops
from ..numba_threads import ThreadedKernel
from .executor import Executor, weight_slot


def channelwise_eligible(descriptor: TensorProductDescriptor) -> bool:
    """Whether every instruction is ``uvu`` with a single-channel second input (the kernel's scope)."""
    d = descriptor
    return bool(d.instructions) and all(
        ins.mode == "uvu" and d.irreps_in2[ins.i_in2].mul == 1 for ins in d.instructions
    )


#: per-path integers of :class:`ChannelwisePaths`, in the numba kernels' argument order
_PATH_FIELDS = ("mul", "off1", "d1", "off2", "off_o", "d_o", "off_w", "weighted")


class ChannelwisePaths(Executor):
    """Per-path offsets and CG entries of a channel-wise product, for the numba kernels.

    Arrays (one entry per instruction ``p``): channel count ``mul``, first column and irrep
    dimension of the ``x1``, ``x2`` and output blocks, first weight column (weights of path
    ``p`` are ``w[:, off_w[p] + u]``, e3nn's ``(mul1, 1)`` block) and whether it is weighted;
    an unweighted path reads the one extra column of ones appended to the weights instead (so
    that the product stays linear in the weight slot, which its derivatives rely on);
    CG entries of path ``p`` are ``cg_*[cg_ptr[p]:cg_ptr[p + 1]]`` as ``(i, j, k, coefficient)``.
    """

    method = "channelwise"

    def __init__(self, descriptor: TensorProductDescriptor):
        super().__init__()
        d = descriptor
        starts1, starts2, starts_out = (
            [s.start for s in irreps.slices()] for irreps in (d.irreps_in1, d.irreps_in2, d.irreps_out)
        )
        weight_slices = d.weight_slices()
        fields = {k: [] for k in _PATH_FIELDS}
        cg_i, cg_j, cg_k, coefs, cg_ptr = [], [], [], [], [0]
        for p, ins in enumerate(d.instructions):
            (m1, ir1), (_, ir2), (_, iro) = (
                d.irreps_in1[ins.i_in1],
                d.irreps_in2[ins.i_in2],
                d.irreps_out[ins.i_out],
            )
            i, j, k, values = so3.wigner_3j_nonzero(ir1.l, ir2.l, iro.l)
            cg_i.append(i), cg_j.append(j), cg_k.append(k), coefs.append(ins.coefficient * values)
            cg_ptr.append(cg_ptr[-1] + len(i))
            values = (m1, starts1[ins.i_in1], ir1.dim, starts2[ins.i_in2], starts_out[ins.i_out], iro.dim,
                      weight_slices[p].start if ins.has_weight else d.weight_numel, int(ins.has_weight))  # fmt: skip
            for key, value in zip(fields, values):
                fields[key].append(value)
        paths = np.asarray([fields[k] for k in _PATH_FIELDS], dtype=np.int64)  # [8, P]
        cg_ijk = np.stack([np.concatenate(a) for a in (cg_i, cg_j, cg_k)]).astype(np.int64)  # [3, nnz]
        self.scratch = int(max(paths[2] * paths[5]))  # d1 * d_o
        blocks1, blocks_o = (
            np.asarray(
                [(s.start, mul, ir.dim) for s, (mul, ir) in zip(irreps.slices(), irreps)], dtype=np.int64
            ).reshape(-1, 3)
            for irreps in (d.irreps_in1, d.irreps_out)
        )
        # column orders: x[:, order] is x in ir_mul layout, and back with argsort(order)
        orders = []
        for irreps in (d.irreps_in1, d.irreps_out):
            order = np.asarray(ir_mul_permutation(irreps), dtype=np.int64)
            orders += [order, np.argsort(order)]
        arrays = (paths, np.asarray(cg_ptr, dtype=np.int64), cg_ijk, np.concatenate(coefs).astype(np.float64),
                  blocks1, blocks_o, *orders)  # fmt: skip
        #: the custom ops' constants (CPU tensors; :class:`_KernelArguments` reads them)
        self.tables = [torch.from_numpy(np.array(a, order="C")) for a in arrays]
        #: the last table, ``[identity graph, scratch size]``, per kind of graph
        self.options = {flag: torch.tensor([int(flag), self.scratch]) for flag in (False, True)}
        self.has_unweighted = not all(ins.has_weight for ins in d.instructions)
        self.widths = {
            OUT: d.irreps_out.dim,
            X1: d.irreps_in1.dim,
            X2: d.irreps_in2.dim,
            W: d.weight_numel + self.has_unweighted,
        }

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """The product sample by sample: ``x1 [Z, dim1], x2 [Z, dim2], weight [Z | -, n_w] -> [Z, dim_out]``."""
        z = x1.shape[0]
        w = self._weight(weight, z, x1)
        tables = self.identity_tables(z, x1.device)
        return CHANNELWISE_OPS.forward(x1.contiguous(), x2.contiguous(), w, z, self.widths[OUT], tables)

    def message_passing(self, x1, x2, weight, sender, receiver) -> torch.Tensor:
        """``out[n] = sum over edges e with receiver[e] == n of product(x1[sender[e]], x2[e], w[e])``.

        ``x1 [N, dim1]``, ``x2 [n_edges, dim2]``, ``weight [n_edges | -, n_w]`` -> ``[N, dim_out]``.
        """
        n = x1.shape[0]
        w = self._weight(weight, x2.shape[0], x1)
        tables = self.graph_tables(sender, receiver, n)
        return CHANNELWISE_OPS.forward(x1.contiguous(), x2.contiguous(), w, n, self.widths[OUT], tables)

    def graph_tables(self, sender: torch.Tensor, receiver: torch.Tensor, num_nodes: int) -> list[torch.Tensor]:
        """The custom ops' ``tables`` for message passing over the edges ``sender -> receiver``."""
        sender, receiver = sender.to(torch.int64), receiver.to(torch.int64)
        graph = [sender, receiver, *_csr(sender, num_nodes), *_csr(receiver, num_nodes)]
        return graph + self.tables + [self.options[False]]

    def identity_tables(self, num_samples: int, device=None) -> list[torch.Tensor]:
        """The custom ops' ``tables`` for a per-sample product (the identity graph)."""
        identity = torch.arange(num_samples, device=device)
        ptr = torch.arange(num_samples + 1, device=device)
        return [identity, identity, identity, ptr, identity, ptr] + self.tables + [self.options[True]]

    def _weight(self, weight, n, like):
        """The weight slot ``[n, n_w (+ 1)]`` (:func:`~.executor.weight_slot`); shared weights
        become a zero-stride view and autograd sums the per-edge gradients."""
        return weight_slot(weight, self.has_unweighted, like).expand(n, self.widths[W])


def _csr(index: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(order, ptr)``: positions sorted by ``index`` (stable), with ``order[ptr[g]:ptr[g + 1]]``
    those of group ``g``. Shapes stay static (no data-dependent sizes), so it compiles."""
    order = torch.argsort(index, stable=True)
    ptr = torch.searchsorted(index[order], torch.arange(num_groups + 1, device=index.device))
    return order, ptr


class _KernelArguments:
    """The custom ops' ``tables`` and ``options`` unpacked into the numba kernels' arguments.

    ``tables``: ``sender, receiver, order_by_sender, ptr_by_sender, order_by_receiver,
    ptr_by_receiver`` (the graph; a per-sample product is the identity graph), then
    :attr:`ChannelwisePaths.tables`, then ``[identity graph, scratch size]``.
    """

    def __init__(self, tables, dtype: torch.dtype):
        arrays = [t.numpy() for t in tables]
        self.sender, self.receiver = arrays[0], arrays[1]
        self.csr = {X1: (arrays[2], arrays[3]), OUT: (arrays[4], arrays[5])}
        paths, self.cg_ptr, self.cg_ijk, coef, self.blocks1, self.blocks_o = arrays[6:12]
        self.paths = tuple(np.ascontiguousarray(row) for row in paths)
        self.order = {X1: tables[12:14], OUT: tables[14:16]}  # (to ir_mul, back to mul_ir) per slot
        self.coef = coef.astype(torch.empty(0, dtype=dtype).numpy().dtype)
        self.identity, self.scratch = bool(arrays[16][0]), int(arrays[16][1])

    def edge_csr(self, num_edges: int) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(num_edges, dtype=np.int64), np.arange(num_edges + 1, dtype=np.int64)

    def common(self, transposed: bool) -> tuple:
        return (
            self.sender, self.receiver, self.blocks1, self.blocks_o, transposed, *self.paths,
            self.cg_ptr, self.cg_ijk, self.coef, self.scratch,
        )  # fmt: skip

    def to_kernel(self, slot: int, t: torch.Tensor, transposed: bool) -> torch.Tensor:
        if transposed and slot in (OUT, X1):
            return t.detach().index_select(1, self.order[slot][0])
        return t

    def from_kernel(self, slot: int, t: torch.Tensor, transposed: bool) -> torch.Tensor:
        if transposed and slot in (OUT, X1):
            return t.index_select(1, self.order[slot][1])
        return t


def _channelwise_contract(target, sources, rows, width, tables):
    """CPU implementation of ``equitensor::cg_channelwise_contract``: slot ``target`` from the others.

    Contractions into x1, x2 or w of message passing read an output-sized node row per edge:
    those rows repeat, so the (small) node arrays are transposed to ir_mul once, not row by row
    inside the kernel. The forward contraction and a per-sample product touch every row once:
    there the kernel transposes each row as it reads it.
    """
    args = _KernelArguments(tables, sources[0].dtype)
    transposed = not args.identity and target in (X1, X2, W)
    others = [s for s in SLOTS if s != target]
    slots = {s: args.to_kernel(s, t, transposed) for s, t in zip(others, sources)}
    result = torch.empty(rows, width, dtype=sources[0].dtype)
    arrays = _numpy_slots({**slots, target: result})
    order, ptr = args.csr[target] if target in (OUT, X1) else args.edge_csr(rows)
    _contract_into(target, *arrays, order, ptr, *args.common(transposed))
    return args.from_kernel(target, result, transposed)


def _channelwise_input_gradients(grad_out, x1, x2, w, tables):
    """CPU implementation of ``equitensor::cg_channelwise_input_gradients`` (one fused pass)."""
    args = _KernelArguments(tables, grad_out.dtype)
    grads = tuple(torch.empty(t.shape, dtype=grad_out.dtype) for t in (x1, x2, w))
    arrays = _numpy_slots({OUT: grad_out, X1: x1, X2: x2, W: w})
    _input_gradients(*arrays, *(t.numpy() for t in grads), *args.csr[X1], *args.common(False))
    return grads


def _numpy_slots(tensors: dict[int, torch.Tensor]) -> tuple[np.ndarray, ...]:
    """numpy views of the four slots in slot order; a zero-row-stride (shared) weight as ``[1, n_w]``."""
    arrays = []
    for slot in SLOTS:
        t = tensors[slot].detach()
        if slot == W and t.shape[0] > 0 and t.stride(0) == 0:
            t = t[:1]
        arrays.append(t.contiguous().numpy())
    return tuple(arrays)


# --------------------------------------------------------------------------------------------
# numba kernels. Slots: out [N, dim_out], x1 [N, dim1], x2 [n_edges, dim2], w [n_edges | 1, n_w].
#
# Rows of out and x1 are copied into per-thread scratch in "ir_mul" order block by block (block
# [start, start + mul * dim) holds entry (u, i) at start + i * mul + u): the channel loops are
# then contiguous, and mul_ir is read and written once per row. The channel loops index 1-d
# views with unsigned counters: with signed ones numba adds negative-index wraparound, which
# keeps LLVM from vectorising them.


@numba.njit(inline="always")
def _transpose_blocks(dst_row, src_row, blocks, to_ir_mul):
    """``dst_row`` = ``src_row`` with every block ``(start, mul, dim)`` transposed from mul_ir to
    ir_mul (``to_ir_mul``) or back. Each block is a row-major ``[rows, cols]`` matrix, read
    contiguously and written transposed."""
    for b in range(blocks.shape[0]):
        start, m, d = blocks[b, 0], blocks[b, 1], blocks[b, 2]
        src, dst = src_row[start : start + m * d], dst_row[start : start + m * d]
        rows, cols = (np.uint64(m), np.uint64(d)) if to_ir_mul else (np.uint64(d), np.uint64(m))
        for r in range(rows):
            for c in range(cols):
                dst[c * rows + r] = src[r * cols + c]


@numba.njit(inline="always")
def _source_row(scratch, array, index, blocks, transposed):
    """Row ``index`` of ``array`` in ir_mul order: the row itself when the array is already
    ``transposed``, else a transposed copy in ``scratch``."""
    if transposed:
        return array[index]
    _transpose_blocks(scratch, array[index], blocks, True)
    return scratch


@numba.njit(inline="always")
def _write_row(array, index, src, blocks, transposed):
    """Write the ir_mul row ``src`` to row ``index`` of ``array`` (in the array's layout)."""
    if transposed:
        array[index, :] = src
    else:
        _transpose_blocks(array[index], src, blocks, False)


@numba.njit(inline="always")
def _edge_matrix(c, x2, e, p, off2, d1, d_o, cg_ptr, cg_ijk, coef):
    """``c[i * d_o + k] = sum_j cg[i, j, k] * x2[e, off2 + j]`` for path ``p``."""
    for q in range(d1[p] * d_o[p]):
        c[q] = 0
    for q in range(cg_ptr[p], cg_ptr[p + 1]):
        c[cg_ijk[0, q] * d_o[p] + cg_ijk[2, q]] += coef[q] * x2[e, off2[p] + cg_ijk[1, q]]


@numba.njit(inline="always")
def _path_weights(wv, w, row, start, m, weighted):
    """``wv[u]`` = the path's weight of channel ``u`` (``w[row, start + u]``), or the ones
    column ``w[row, start]`` for every channel of an unweighted path."""
    um = np.uint64(m)
    if weighted:
        wrow = w[row, start : start + m]
        for u in range(um):
            wv[u] = wrow[u]
    else:
        for u in range(um):
            wv[u] = w[row, start]


@numba.njit(inline="always")
def _add_path_weight_gradient(gw, row, start, t, m, weighted):
    """Adjoint of :func:`_path_weights`: ``t[u]`` into ``gw[row, start + u]`` (or summed into the
    ones column)."""
    um = np.uint64(m)
    if weighted:
        grow = gw[row, start : start + m]
        for u in range(um):
            grow[u] += t[u]
    else:
        total = t[0] * 0
        for u in range(um):
            total += t[u]
        gw[row, start] += total


@ThreadedKernel.define(cache=True)
def _contract_into(
    target, out, x1, x2, w, order, ptr, sender, receiver, blocks1, blocks_o, transposed,
    mul, off1, d1, off2, off_o, d_o, off_w, weighted, cg_ptr, cg_ijk, coef, scratch,
):  # fmt: skip
    """Slot ``target`` (0 out, 1 x1, 2 x2, 3 w) from the three others, overwriting it.

    Group ``g`` owns target row ``g``: its edges ``order[ptr[g]:ptr[g + 1]]`` are those whose
    receiver (target out), sender (target x1) or own index (targets x2, w) is ``g``.
    ``blocks1``/``blocks_o``: ``(start, mul, dim)`` of every block of x1 / out; ``transposed``:
    out and x1 are given (and the target, if one of them, is written) in ir_mul layout.
    """
    for g in numba.prange(ptr.shape[0] - 1):
        _contract_into_group(g, order, ptr, target, out, x1, x2, w, sender, receiver, blocks1, blocks_o, transposed, mul, off1, d1, off2, off_o, d_o, off_w, weighted, cg_ptr, cg_ijk, coef, scratch)  # fmt: skip


@numba.njit(cache=True, fastmath=True)
def _contract_into_group(
    g, order, ptr, target, out, x1, x2, w, sender, receiver, blocks1, blocks_o, transposed, mul,
    off1, d1, off2, off_o, d_o, off_w, weighted, cg_ptr, cg_ijk, coef, scratch,
):  # fmt: skip
    """Group ``g`` of :func:`_contract_into`: target row ``g`` from its edges."""
    shared = w.shape[0] == 1 and x2.shape[0] != 1
    one = np.ones(1, dtype=x2.dtype)[0]  # keeps float32 arithmetic in float32
    zero = one - one
    c = np.empty(scratch, dtype=x2.dtype)
    xs_buf = np.empty(x1.shape[1], dtype=x2.dtype)
    gs_buf = np.empty(out.shape[1], dtype=x2.dtype)
    acc_row = np.zeros(out.shape[1] if target == 0 else x1.shape[1], dtype=x2.dtype)  # node targets
    xs, gs = xs_buf, gs_buf
    tmp = np.empty(max(1, mul.max()), dtype=x2.dtype)
    wv = np.ones(max(1, mul.max()), dtype=x2.dtype)
    if target == 2:
        x2[g, :] = 0
    elif target == 3:
        w[g, :] = 0
    for q in range(ptr[g], ptr[g + 1]):
        e = order[q]
        we = 0 if shared else e
        if target != 1:
            xs = _source_row(xs_buf, x1, sender[e], blocks1, transposed)
        if target != 0:
            gs = _source_row(gs_buf, out, receiver[e], blocks_o, transposed)
        for p in range(mul.shape[0]):
            m, n1, no, b1, bo, bw = mul[p], d1[p], d_o[p], off1[p], off_o[p], off_w[p]
            um = np.uint64(m)
            if target != 2:
                _edge_matrix(c, x2, e, p, off2, d1, d_o, cg_ptr, cg_ijk, coef)
            if target != 3:
                _path_weights(wv, w, we, bw, m, weighted[p])
            if target == 0:  # out[k, u] += w[u] * sum_i c[i, k] x1[i, u]
                for i in range(n1):
                    xi = xs[b1 + i * m : b1 + (i + 1) * m]
                    for u in range(um):
                        tmp[u] = wv[u] * xi[u]
                    for k in range(no):
                        cik = c[i * no + k]
                        ok = acc_row[bo + k * m : bo + (k + 1) * m]
                        for u in range(um):
                            ok[u] += cik * tmp[u]
            elif target == 1:  # x1[i, u] += w[u] * sum_k c[i, k] out[k, u]
                for i in range(n1):
                    for u in range(um):
                        tmp[u] = zero
                    for k in range(no):
                        cik = c[i * no + k]
                        ok = gs[bo + k * m : bo + (k + 1) * m]
                        for u in range(um):
                            tmp[u] += cik * ok[u]
                    xi = acc_row[b1 + i * m : b1 + (i + 1) * m]
                    for u in range(um):
                        xi[u] += wv[u] * tmp[u]
            elif target == 3:  # w[u] += sum_ik c[i, k] x1[i, u] out[k, u]
                for u in range(um):
                    tmp[u] = zero
                for i in range(n1):
                    xi = xs[b1 + i * m : b1 + (i + 1) * m]
                    for k in range(no):
                        cik = c[i * no + k]
                        ok = gs[bo + k * m : bo + (k + 1) * m]
                        for u in range(um):
                            tmp[u] += cik * xi[u] * ok[u]
                _add_path_weight_gradient(w, g, bw, tmp, m, weighted[p])
            else:  # a[i, k] = sum_u w[u] x1[i, u] out[k, u]; x2[j] += sum_ik cg[i, j, k] a[i, k]
                for i in range(n1):
                    xi = xs[b1 + i * m : b1 + (i + 1) * m]
                    for u in range(um):
                        tmp[u] = wv[u] * xi[u]
                    for k in range(no):
                        ok = gs[bo + k * m : bo + (k + 1) * m]
                        acc = zero
                        for u in range(um):
                            acc += tmp[u] * ok[u]
                        c[i * no + k] = acc
                for q2 in range(cg_ptr[p], cg_ptr[p + 1]):
                    x2[g, off2[p] + cg_ijk[1, q2]] += coef[q2] * c[cg_ijk[0, q2] * no + cg_ijk[2, q2]]
    if target == 0:
        _write_row(out, g, acc_row, blocks_o, transposed)
    elif target == 1:
        _write_row(x1, g, acc_row, blocks1, transposed)


@ThreadedKernel.define(cache=True)
def _input_gradients(
    out, x1, x2, w, g1, g2, gw, order, ptr, sender, receiver, blocks1, blocks_o, transposed,
    mul, off1, d1, off2, off_o, d_o, off_w, weighted, cg_ptr, cg_ijk, coef, scratch,
):  # fmt: skip
    """Gradients of ``<out, product(x1, x2, w)>`` into ``g1``, ``g2`` and ``gw`` in one pass.

    ``out`` is the incoming gradient. Grouped by sender: group ``g`` owns ``g1`` row ``g`` and
    the ``g2``/``gw`` rows of its edges, so writes never race; the three gradients share each
    edge's loads.
    """
    for g in numba.prange(ptr.shape[0] - 1):
        _input_gradients_group(g, order, ptr, out, x1, x2, w, g1, g2, gw, sender, receiver, blocks1, blocks_o, transposed, mul, off1, d1, off2, off_o, d_o, off_w, weighted, cg_ptr, cg_ijk, coef, scratch)  # fmt: skip


@numba.njit(cache=True, fastmath=True)
def _input_gradients_group(
    g, order, ptr, out, x1, x2, w, g1, g2, gw, sender, receiver, blocks1, blocks_o, transposed, mul,
    off1, d1, off2, off_o, d_o, off_w, weighted, cg_ptr, cg_ijk, coef, scratch,
):  # fmt: skip
    """Group ``g`` (a sender) of :func:`_input_gradients`."""
    shared = w.shape[0] == 1 and x2.shape[0] != 1
    one = np.ones(1, dtype=x2.dtype)[0]
    zero = one - one
    c = np.empty(scratch, dtype=x2.dtype)
    xs_buf = np.empty(x1.shape[1], dtype=x2.dtype)
    g1s = np.zeros(x1.shape[1], dtype=x2.dtype)
    gs_buf = np.empty(out.shape[1], dtype=x2.dtype)
    wv = np.empty(max(1, mul.max()), dtype=x2.dtype)
    tw = np.empty(max(1, mul.max()), dtype=x2.dtype)
    t1 = np.empty(max(1, mul.max()), dtype=x2.dtype)
    xs = _source_row(xs_buf, x1, g, blocks1, transposed)
    for q in range(ptr[g], ptr[g + 1]):
        e = order[q]
        we = 0 if shared else e
        gs = _source_row(gs_buf, out, receiver[e], blocks_o, transposed)
        g2[e, :] = 0
        gw[e, :] = 0
        for p in range(mul.shape[0]):
            m, n1, no, b1, bo, bw = mul[p], d1[p], d_o[p], off1[p], off_o[p], off_w[p]
            um = np.uint64(m)
            _edge_matrix(c, x2, e, p, off2, d1, d_o, cg_ptr, cg_ijk, coef)
            _path_weights(wv, w, we, bw, m, weighted[p])
            for u in range(um):
                tw[u] = zero
            for i in range(n1):
                xi = xs[b1 + i * m : b1 + (i + 1) * m]
                for u in range(um):
                    t1[u] = zero
                for k in range(no):
                    cik = c[i * no + k]
                    ok = gs[bo + k * m : bo + (k + 1) * m]
                    acc = zero
                    for u in range(um):
                        t1[u] += cik * ok[u]
                        tw[u] += cik * xi[u] * ok[u]
                        acc += wv[u] * xi[u] * ok[u]
                    c[i * no + k] = acc  # c[i, k] is not needed again: it becomes a[i, k]
                gi = g1s[b1 + i * m : b1 + (i + 1) * m]
                for u in range(um):
                    gi[u] += wv[u] * t1[u]
            _add_path_weight_gradient(gw, e, bw, tw, m, weighted[p])
            for q2 in range(cg_ptr[p], cg_ptr[p + 1]):
                g2[e, off2[p] + cg_ijk[1, q2]] += coef[q2] * c[cg_ijk[0, q2] * no + cg_ijk[2, q2]]
    _write_row(g1, g, g1s, blocks1, transposed)


#: ``equitensor::cg_channelwise_contract`` / ``equitensor::cg_channelwise_input_gradients``
#: (tables and options: :class:`_KernelArguments`).
CHANNELWISE_OPS = define_multilinear_ops("cg_channelwise", _channelwise_contract, _channelwise_input_gradients)
