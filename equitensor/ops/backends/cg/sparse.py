"""Method ``sparse``: the product as one 4-linear form over a flat list of terms, one numba kernel.

``Phi(out, x1, x2, w) = sum_t coef[t] * out[io_t] * x1[i1_t] * x2[i2_t] * w[iw_t]`` over every
nonzero CG entry x channel combination, built once at plan time. The forward pass is one numba
kernel over (nonzero CG entry x affine channel loops), parallel over samples, with no
intermediate tensor; the backward pass computes the three input gradients in one fused pass
over the same terms, and every further derivative is "contract three slots into the fourth"
(:mod:`..multilinear`), so double backward (force training) works to any order. CPU only.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
import torch

from .... import so3
from ...descriptor import TensorProductDescriptor
from ..multilinear import OUT, SLOTS, define_multilinear_ops
from ..numba_threads import ThreadedKernel
from .executor import Executor, weight_slot


def channel_loops(mode: str, m1: int, m2: int, mo: int, d1: int, d2: int, do: int) -> list[tuple[int, tuple]]:
    """Three nested channel loops ``(count, strides)`` of a path, outer to inner.

    Strides are in slot order (out, x1, x2, w): a channel step moves ``x1`` by ``d1`` columns
    (mul_ir layout), and ``w`` along the path's row-major weight block (:data:`WEIGHT_SHAPES`).
    The input channel ``u`` is innermost where it exists, so consecutive terms touch nearby columns.
    """
    none = (1, (0, 0, 0, 0))
    if mode == "uvu":
        return [none, (m2, (0, 0, d2, 1)), (m1, (do, d1, 0, m2))]
    if mode == "uvv":
        return [none, (m2, (do, 0, d2, 1)), (m1, (0, d1, 0, m2))]
    if mode == "uuu":
        return [none, none, (m1, (do, d1, d2, 1))]
    if mode == "uvw":
        return [(m1, (0, d1, 0, m2 * mo)), (m2, (0, 0, d2, mo)), (mo, (do, 0, 0, 1))]
    return [none, (mo, (do, 0, 0, 1)), (m1, (0, d1, d2, mo))]  # uuw


class Terms(NamedTuple):
    """The nonzero CG entries of some instructions, each with its channel loops.

    Entry ``e`` stands for the terms ``coef[e] * out[c_0] * x1[c_1] * x2[c_2] * w[c_3]`` with
    ``c_s = base[e, s] + i * strides[e, 0, s] + j * strides[e, 1, s] + l * strides[e, 2, s]`` for
    ``i < counts[e, 0], j < counts[e, 1], l < counts[e, 2]``: flat mul_ir columns of ``out``,
    ``x1``, ``x2`` and of the weight slot (:func:`~.executor.weight_slot`), whose last column
    of ones the unweighted paths point to.
    """

    base: np.ndarray  # [E, 4] int64
    counts: np.ndarray  # [E, 3] int64
    strides: np.ndarray  # [E, 3, 4] int64
    coef: np.ndarray  # [E] float64
    has_unweighted: bool


def term_list(descriptor: TensorProductDescriptor, instruction_ids) -> Terms:
    """The :class:`Terms` of the listed instructions (in that order)."""
    d = descriptor
    weight_slices = d.weight_slices()
    starts1, starts2, starts_out = (
        [s.start for s in irreps.slices()] for irreps in (d.irreps_in1, d.irreps_in2, d.irreps_out)
    )
    bases, counts, strides, coefs = [np.zeros((0, 4))], [np.zeros((0, 3))], [np.zeros((0, 3, 4))], [np.zeros(0)]
    for k in instruction_ids:
        ins = d.instructions[k]
        (m1, ir1), (m2, ir2), (mo, iro) = d.irreps_in1[ins.i_in1], d.irreps_in2[ins.i_in2], d.irreps_out[ins.i_out]
        e1, e2, eo, values = so3.wigner_3j_nonzero(ir1.l, ir2.l, iro.l)
        loops = channel_loops(ins.mode, m1, m2, mo, ir1.dim, ir2.dim, iro.dim)
        if not ins.has_weight:  # every channel reads the one column of ones
            loops = [(n, (so, s1, s2, 0)) for n, (so, s1, s2, _) in loops]
        w_base = weight_slices[k].start if ins.has_weight else d.weight_numel
        bases.append(np.stack([starts_out[ins.i_out] + eo, starts1[ins.i_in1] + e1, starts2[ins.i_in2] + e2,
                               np.full_like(e1, w_base)], -1))  # fmt: skip
        counts.append(np.tile([n for n, _ in loops], (len(e1), 1)))
        strides.append(np.tile([s for _, s in loops], (len(e1), 1, 1)))
        coefs.append(ins.coefficient * values)
    return Terms(
        *(np.ascontiguousarray(np.concatenate(a), dtype=np.int64) for a in (bases, counts, strides)),
        np.concatenate(coefs).astype(np.float64),
        any(not d.instructions[k].has_weight for k in instruction_ids),
    )


class SparseTerms(Executor):
    """The :class:`Terms` of some instructions, executed by :func:`_contract_into`."""

    method = "sparse"

    def __init__(self, descriptor: TensorProductDescriptor, instruction_ids):
        super().__init__()
        d = descriptor
        terms = term_list(d, instruction_ids)
        self.has_unweighted = terms.has_unweighted
        #: the custom ops' constants ``[base, counts, strides, coef]`` (CPU tensors)
        self.tables = [torch.from_numpy(a) for a in terms[:4]]
        #: widths of the four slots (out, x1, x2, w)
        self.widths = (d.irreps_out.dim, d.irreps_in1.dim, d.irreps_in2.dim, d.weight_numel + self.has_unweighted)

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        z = x1.shape[0]
        # Shared weights become a zero-stride [Z, n_w] view: the kernel reads the same row for
        # every sample and autograd sums the per-sample weight gradients back.
        w = weight_slot(weight, self.has_unweighted, x1).expand(z, self.widths[3])
        return SPARSE_OPS.forward(x1.contiguous(), x2.contiguous(), w, z, self.widths[OUT], self.tables)


def _kernel_operands(tensors, rows: int) -> list[np.ndarray]:
    """numpy views ``[rows, width]`` of the operands; a zero-row-stride (shared) operand stays one."""
    operands = [t.detach().expand(rows, t.shape[1]) for t in tensors]
    return [(t if t.stride(1) == 1 else t.contiguous()).numpy() for t in operands]


def _sparse_contract(target, sources, rows, width, tables):
    """CPU implementation of ``equitensor::cg_sparse_contract`` (:func:`_contract_into`)."""
    base, counts, strides, coef = (t.numpy() for t in tables)
    result = torch.empty(rows, width, dtype=sources[0].dtype)
    slots = [s for s in SLOTS if s != target]
    coef = coef.astype(result.numpy().dtype)
    _contract_into(result.numpy(), *_kernel_operands(sources, rows), base, counts, strides, coef, target, *slots)
    return result


def _sparse_input_gradients(grad_out, x1, x2, w, tables):
    """CPU implementation of ``equitensor::cg_sparse_input_gradients`` (:func:`_input_gradients`)."""
    base, counts, strides, coef = (t.numpy() for t in tables)
    z = grad_out.shape[0]
    grads = [torch.zeros(t.shape, dtype=grad_out.dtype) for t in (x1, x2, w)]
    coef = coef.astype(grads[0].numpy().dtype)
    _input_gradients(*(g.numpy() for g in grads), *_kernel_operands((grad_out, x1, x2, w), z), base, counts, strides, coef)
    return tuple(grads)


#: ``equitensor::cg_sparse_contract`` / ``equitensor::cg_sparse_input_gradients``; tables
#: ``[base [E, 4], counts [E, 3], strides [E, 3, 4] (int64), coef [E] (float64)]`` of :class:`SparseTerms`.
SPARSE_OPS = define_multilinear_ops("cg_sparse", _sparse_contract, _sparse_input_gradients)


# --------------------------------------------------------------------------------------------
# numba kernels: parallel over samples when torch has more than one thread, else serial


@ThreadedKernel.define(cache=True)
def _contract_into(target, src_a, src_b, src_c, base, counts, strides, coef, slot_t, slot_a, slot_b, slot_c):
    """Slot ``slot_t`` of the 4-linear form from the three others, summed over every term.

    Entry ``e`` (one nonzero CG coefficient ``coef[e]`` of one path) stands for the terms
    ``target[z, col_t] += coef[e] * src_a[z, col_a] * src_b[z, col_b] * src_c[z, col_c]`` with
    ``col_s = base[e, s] + i * strides[e, 0, s] + j * strides[e, 1, s] + l * strides[e, 2, s]``
    for the channel loops ``i < counts[e, 0]``, ``j < counts[e, 1]``, ``l < counts[e, 2]``
    (slots: 0 out, 1 x1, 2 x2, 3 w). Shapes: ``target [Z, n_t]`` (zeroed here),
    ``src_* [Z, n_*]`` (a zero row stride is fine: shared weights), ``base [E, 4]``,
    ``counts [E, 3]``, ``strides [E, 3, 4]``, ``coef [E]``.

    Parallel over samples; each sample owns its target row, so there is no race. When the
    target does not move along the inner channel loop (e.g. x2 in uvu) the loop is a
    register reduction.
    """
    for z in numba.prange(target.shape[0]):
        _contract_into_row(
            z, target, src_a, src_b, src_c, base, counts, strides, coef, slot_t, slot_a, slot_b, slot_c
        )


@numba.njit(cache=True)
def _contract_into_row(
    z, target, src_a, src_b, src_c, base, counts, strides, coef, slot_t, slot_a, slot_b, slot_c
):
    """Sample ``z`` of :func:`_contract_into`."""
    row, a, b, c = target[z], src_a[z], src_b[z], src_c[z]
    for q in range(row.shape[0]):  # zero here, in parallel and while the row is hot in cache
        row[q] = 0
    for e in range(coef.shape[0]):
        k = coef[e]
        n = counts[e, 2]
        dt, da, db, dc = (
            strides[e, 2, slot_t],
            strides[e, 2, slot_a],
            strides[e, 2, slot_b],
            strides[e, 2, slot_c],
        )
        for i in range(counts[e, 0]):
            for j in range(counts[e, 1]):
                pt = base[e, slot_t] + i * strides[e, 0, slot_t] + j * strides[e, 1, slot_t]
                pa = base[e, slot_a] + i * strides[e, 0, slot_a] + j * strides[e, 1, slot_a]
                pb = base[e, slot_b] + i * strides[e, 0, slot_b] + j * strides[e, 1, slot_b]
                pc = base[e, slot_c] + i * strides[e, 0, slot_c] + j * strides[e, 1, slot_c]
                if dt == 0:
                    acc = a[pa] * 0
                    for l in range(n):
                        acc += a[pa + l * da] * b[pb + l * db] * c[pc + l * dc]
                    row[pt] += k * acc
                else:
                    for l in range(n):
                        row[pt + l * dt] += k * a[pa + l * da] * b[pb + l * db] * c[pc + l * dc]


@ThreadedKernel.define(cache=True)
def _input_gradients(g1, g2, gw, grad_out, x1, x2, w, base, counts, strides, coef):
    """The three input gradients of the forward contraction in one pass over the terms.

    ``g1[z, col_1] += coef * grad_out[z, col_0] * x2[z, col_2] * w[z, col_3]`` and likewise
    for ``g2`` and ``gw``, with the columns of :func:`_contract_into`. Sharing the four loads
    of each term makes the backward pass cost about 1.5 forward passes instead of 3. Gradients
    that do not move along the inner channel loop are reduced in a register.
    """
    for z in numba.prange(grad_out.shape[0]):
        _input_gradients_row(z, g1, g2, gw, grad_out, x1, x2, w, base, counts, strides, coef)


@numba.njit(cache=True)
def _input_gradients_row(z, g1, g2, gw, grad_out, x1, x2, w, base, counts, strides, coef):
    """Sample ``z`` of :func:`_input_gradients`."""
    go, a1, a2, aw, r1, r2, rw = grad_out[z], x1[z], x2[z], w[z], g1[z], g2[z], gw[z]
    for e in range(coef.shape[0]):
        k = coef[e]
        n = counts[e, 2]
        do, d1, d2, dw = strides[e, 2, 0], strides[e, 2, 1], strides[e, 2, 2], strides[e, 2, 3]
        for i in range(counts[e, 0]):
            for j in range(counts[e, 1]):
                po = base[e, 0] + i * strides[e, 0, 0] + j * strides[e, 1, 0]
                p1 = base[e, 1] + i * strides[e, 0, 1] + j * strides[e, 1, 1]
                p2 = base[e, 2] + i * strides[e, 0, 2] + j * strides[e, 1, 2]
                pw = base[e, 3] + i * strides[e, 0, 3] + j * strides[e, 1, 3]
                acc1 = acc2 = accw = go[po] * 0
                for l in range(n):
                    t = k * go[po + l * do]
                    v1, v2, vw = a1[p1 + l * d1], a2[p2 + l * d2], aw[pw + l * dw]
                    if d1 == 0:
                        acc1 += t * v2 * vw
                    else:
                        r1[p1 + l * d1] += t * v2 * vw
                    if d2 == 0:
                        acc2 += t * v1 * vw
                    else:
                        r2[p2 + l * d2] += t * v1 * vw
                    if dw == 0:
                        accw += t * v1 * v2
                    else:
                        rw[pw + l * dw] += t * v1 * v2
                r1[p1] += acc1
                r2[p2] += acc2
                rw[pw] += accw


