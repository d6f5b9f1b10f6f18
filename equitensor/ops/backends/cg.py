"""Backend ``cg``: the exact Clebsch-Gordan tensor product (every path, one weight block per path).

Weights use e3nn's flat layout (instruction order, each block row-major with the shapes of
:data:`~equitensor.ops.descriptor.WEIGHT_SHAPES`), so ``o3.TensorProduct`` weights can be
reused unchanged. Inputs and outputs stay in mul_ir layout: no method converts layouts.

Methods (``TensorProduct(..., backend="cg", method=...)``):

* ``"sparse"`` — the product is one 4-linear form
  ``Phi(out, x1, x2, w) = sum_t coef[t] * out[io_t] * x1[i1_t] * x2[i2_t] * w[iw_t]`` over a flat
  list of terms (nonzero CG entry x channel combination), built once at construction. The
  forward pass is one numba kernel over (nonzero CG entry x affine channel loops), parallel
  over samples, with no intermediate tensor: the only large memory traffic is the output.
  The backward pass computes the three input gradients in one fused pass over the same terms.
  Every further derivative is the kernel "contract three slots into the fourth", whose
  derivatives are again that kernel, so double backward (force training) works to any order.
  CPU only; fits modes whose channel combinations per path are few: ``uvu``, ``uvv``,
  ``uuu`` (MACE's convolution and self-products).
* ``"grouped"`` — pure torch: paths with the same mode and multiplicities are stacked (CG
  blocks zero-padded to a common shape) and contracted by one ``einsum`` per group, then
  scattered into the output with one ``index_add``. Fits channel-mixing modes (``uvw``,
  ``uuw``) where the work is matrix products; runs on any device.
* ``"dense"`` — shared weights only: the whole product is then one fixed bilinear map, so the
  matrix ``M(w) [dim1 * dim2, dim_out]`` is assembled from the term list (one ``index_put``)
  and applied as a single GEMM to the outer product ``x1 ⊗ x2``. Pure torch, any device,
  differentiable to any order. Wins when multiplicities are small (Xie et al.'s SISO/SIMO/MIMO
  settings, multiplicity 1), where the per-term kernels are dominated by overhead.
* ``"channelwise"`` — every instruction ``uvu`` with a multiplicity-1 second input (MACE's
  convolution, ``x1 ⊗ Y(edge)``): the kernel of :mod:`.cg_channelwise`, which contracts each CG
  block with the sample's ``x2`` first and then runs one small mat-vec per channel, reading and
  writing mul_ir rows directly. It also runs :meth:`message_passing` fused (gather at senders,
  product, sum at receivers) without forming per-edge messages. CPU only; any order of
  derivative.
* ``"auto"`` (default) — ``dense`` when the weights are shared (or absent) and ``M`` has at most
  :data:`DENSE_MAX_ENTRIES` entries; else ``channelwise`` when every instruction fits it;
  otherwise ``sparse`` for paths with at most
  :data:`SPARSE_MAX_CHANNEL_COMBOS` channel combinations, ``grouped`` for the rest; off the CPU
  (CUDA, meta) the pure-torch ``grouped`` for every path. ``backend.method`` names the method
  that runs on the module's device, :meth:`CGBackend.method_for` for any device; ``sparse`` and
  ``channelwise`` asked for explicitly raise off the CPU instead of being replaced.

The numba kernels are ``torch.library`` custom ops (``equitensor::cg_sparse_*``,
``equitensor::cg_channelwise_*``, see :mod:`.multilinear`) with fake implementations and
registered autograd: ``torch.compile(fullgraph=True)`` traces through them, double backward
included.
* ``"naive"`` — the reference: one ``einsum`` per path. Used by the tests.

All CG tables are float64 masters (``add_table``), so ``.double()`` is exact.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from ... import so3
from ..descriptor import Instruction, TensorProductDescriptor
from .base import TensorProductBackend, instruction_paths
from .cg_channelwise import ChannelwisePaths, channelwise_eligible
from .multilinear import OUT, SLOTS, define_multilinear_ops
from .numba_threads import use_parallel_kernels

METHODS = ("auto", "channelwise", "sparse", "grouped", "dense", "naive")

#: ``auto`` runs a shared-weight product as one GEMM (``dense``) when its bilinear matrix has at
#: most this many entries (``dim1 * dim2 * dim_out``; 2^22 floats = 16 MB in float32).
DENSE_MAX_ENTRIES = 2**22

#: ``auto`` sends a path to the sparse kernel when its channel combinations (u*v for uvu/uvv,
#: u for uuu, u*v*w for uvw, u*w for uuw) are at most this many; beyond it matrix products win.
SPARSE_MAX_CHANNEL_COMBOS = 512

#: CG entries smaller than this (float64 round-off of exact zeros) are dropped from the term list.
_CG_ZERO = 1e-12


class CGBackend(TensorProductBackend):
    """Exact CG product (see the module docstring for the execution methods).

    Args:
        descriptor: the validated product.
        method: one of :data:`METHODS` (module docstring).
    """

    # the per-path einsum reference: the numba kernels implement reverse-mode autograd only
    analysis_options = {"method": "naive"}

    def __init__(self, descriptor: TensorProductDescriptor, method: str = "auto"):
        super().__init__(descriptor)
        if method not in METHODS:
            raise ValueError(f"cg backend: unknown method {method!r}; expected one of {METHODS}")
        self.requested_method = method
        self.weight_numel = descriptor.weight_numel
        self.paths = instruction_paths(descriptor)
        # moves with the module (.to(device)), so that `method` can name what runs there
        self.register_buffer("_device_marker", torch.empty(0), persistent=False)
        if method == "naive":  # the per-path reference reads whole CG blocks
            for k, ins in enumerate(descriptor.instructions):
                l1, l2, lo = (ir.l for ir in descriptor.path_irreps(ins))
                self.add_table(f"cg_{k}", ins.coefficient * so3.wigner_3j(l1, l2, lo))

        everything = list(range(len(descriptor.instructions)))
        eligible = channelwise_eligible(descriptor)
        if method == "channelwise" and not eligible:
            raise ValueError(
                "cg backend: method='channelwise' needs every instruction in mode 'uvu' with a "
                "multiplicity-1 second input (MACE's convolution); use method='auto'"
            )
        self._channelwise = (
            ChannelwisePaths(self, "channelwise") if eligible and method in ("auto", "channelwise") else None
        )
        # CPU routes of `auto` (when not channel-wise): few channel combinations -> sparse kernel
        if method == "sparse" or (method == "auto" and self._channelwise is None):
            sparse = [
                k
                for k in everything
                if method == "sparse"
                or _channel_combos(descriptor, descriptor.instructions[k]) <= SPARSE_MAX_CHANNEL_COMBOS
            ]
        else:
            sparse = []
        rest = [k for k in everything if k not in sparse]
        self._sparse = SparseTerms(self, "sparse", sparse) if sparse else None
        self._grouped_rest = (
            GroupedPaths(self, "grouped_rest", rest) if sparse and rest and method == "auto" else None
        )
        self._cpu_auto = "channelwise" if self._channelwise is not None else (
            "grouped" if not sparse else ("sparse" if not rest else "sparse+grouped")
        )  # fmt: skip
        # every path in one grouped executor: method 'grouped', and `auto` off the CPU
        self._grouped = GroupedPaths(self, "grouped", everything) if method in ("auto", "grouped") and everything else None
        entries = descriptor.irreps_in1.dim * descriptor.irreps_in2.dim * descriptor.irreps_out.dim
        wants_dense = method == "dense" or (method == "auto" and entries <= DENSE_MAX_ENTRIES)
        self._dense = BilinearMatrix(self, "dense", everything) if wants_dense and everything else None

    @property
    def method(self) -> str:
        """The method that runs on this module's device with per-sample weights (see :meth:`method_for`)."""
        return self.method_for(self._device_marker.device, shared=False)

    def method_for(self, device: torch.device | str, shared: bool) -> str:
        """The method that runs for inputs on ``device`` with shared (or no) / per-sample weights.

        ``auto`` resolves to ``dense`` (shared weights, small bilinear matrix), else on the CPU to
        ``channelwise``, ``sparse``, ``grouped`` or ``sparse+grouped`` (paths split by channel
        combinations), and off the CPU (CUDA, meta, ...) to the pure-torch ``grouped``. A CPU-only
        method asked for explicitly is never replaced: off the CPU it raises.
        """
        device_type = torch.device(device).type
        requested = self.requested_method
        if requested in ("sparse", "channelwise") and device_type != "cpu":
            raise ValueError(
                f"cg backend: method={requested!r} runs numba kernels on the CPU only, and the inputs "
                f"are on {device_type!r}; use method='auto' (pure-torch 'grouped' there) or 'grouped'"
            )
        if requested != "auto":
            return requested
        if shared and self._dense is not None:
            return "dense"
        return self._cpu_auto if device_type == "cpu" else "grouped"

    def forward(self, x1, x2, weight):
        shared = weight is None or weight.ndim == 1
        method = self.method_for(x1.device, shared)
        if method == "dense" and not shared:
            raise ValueError("cg backend: method='dense' needs shared weights (shared_weights=True)")
        if method == "naive":
            return self._naive_forward(x1, x2, weight)
        executor = {
            "dense": self._dense,
            "channelwise": None if self._channelwise is None else self._channelwise.per_sample,
            "sparse": self._sparse,
            "grouped": self._grouped,
        }.get(method)
        if method == "sparse+grouped":
            return self._sparse(x1, x2, weight) + self._grouped_rest(x1, x2, weight)
        if executor is None:  # no instructions
            return x1.new_zeros(x1.shape[0], self.descriptor.irreps_out.dim)
        return executor(x1, x2, weight)

    def message_passing(self, x1, x2, weight, sender, receiver):
        """Fused gather-product-scatter with the channel-wise kernel when that is the method
        that runs (see :meth:`method_for`); otherwise the generic per-edge route."""
        shared = weight is None or weight.ndim == 1
        if self.method_for(x1.device, shared) == "channelwise":
            return self._channelwise.message_passing(x1, x2, weight, sender, receiver)
        return super().message_passing(x1, x2, weight, sender, receiver)

    def _naive_forward(self, x1, x2, weight):
        """Reference: one einsum per path, then a sum per output block."""
        d = self.descriptor
        z = x1.shape[0]
        blocks1 = [
            x1[:, s].reshape(z, mul, ir.dim) for s, (mul, ir) in zip(d.irreps_in1.slices(), d.irreps_in1)
        ]
        blocks2 = [
            x2[:, s].reshape(z, mul, ir.dim) for s, (mul, ir) in zip(d.irreps_in2.slices(), d.irreps_in2)
        ]
        outputs = [[] for _ in d.irreps_out]
        for k, (ins, wslice) in enumerate(zip(d.instructions, d.weight_slices())):
            table = self.table(f"cg_{k}", x1)
            product_eq, per_sample_eq, shared_eq = _EINSUM[ins.mode]
            products = torch.einsum(product_eq, blocks1[ins.i_in1], blocks2[ins.i_in2], table)
            if ins.has_weight:
                if weight.ndim == 1:
                    out = torch.einsum(shared_eq, products, weight[wslice].reshape(ins.weight_shape))
                else:
                    out = torch.einsum(
                        per_sample_eq, products, weight[:, wslice].reshape(z, *ins.weight_shape)
                    )
            else:
                out = torch.einsum(_UNWEIGHTED[ins.mode], products)
            outputs[ins.i_out].append(out)
        result = [
            torch.stack(outs).sum(0).reshape(z, mul * ir.dim) if outs else x1.new_zeros(z, mul * ir.dim)
            for outs, (mul, ir) in zip(outputs, d.irreps_out)
        ]
        return torch.cat(result, dim=1) if result else x1.new_zeros(z, 0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, method={self.requested_method!r}"


# --------------------------------------------------------------------------------------------
# naive reference: einsum equations per mode

_EINSUM = {
    # (x1 [z,u,i], x2 [z,v,j], C [i,j,k]) -> products, then weights (per sample, shared)
    "uvw": ("zui,zvj,ijk->zuvk", "zuvk,zuvw->zwk", "zuvk,uvw->zwk"),
    "uvu": ("zui,zvj,ijk->zuvk", "zuvk,zuv->zuk", "zuvk,uv->zuk"),
    "uvv": ("zui,zvj,ijk->zuvk", "zuvk,zuv->zvk", "zuvk,uv->zvk"),
    "uuw": ("zui,zuj,ijk->zuk", "zuk,zuw->zwk", "zuk,uw->zwk"),
    "uuu": ("zui,zuj,ijk->zuk", "zuk,zu->zuk", "zuk,u->zuk"),
}
_UNWEIGHTED = {"uvu": "zuvk->zuk", "uvv": "zuvk->zvk", "uuu": "zuk->zuk"}


# --------------------------------------------------------------------------------------------
# channel structure of each mode


def _channel_loops(
    mode: str, m1: int, m2: int, mo: int, d1: int, d2: int, do: int
) -> list[tuple[int, tuple]]:
    """Three nested channel loops ``(count, strides)`` of a path, outer to inner.

    Strides are in slot order (out, x1, x2, w): a channel step moves ``x1`` by ``d1`` columns
    (mul_ir layout), and ``w`` along the path's row-major weight block (:data:`WEIGHT_SHAPES`).
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


def _channel_combos(d: TensorProductDescriptor, ins: Instruction) -> int:
    m1, m2, mo = d.irreps_in1[ins.i_in1].mul, d.irreps_in2[ins.i_in2].mul, d.irreps_out[ins.i_out].mul
    return {"uvw": m1 * m2 * mo, "uvu": m1 * m2, "uvv": m1 * m2, "uuw": m1 * mo, "uuu": m1}[ins.mode]


# --------------------------------------------------------------------------------------------
# sparse: one 4-linear term list, one numba kernel for the forward pass and every derivative


@numba.njit(parallel=True, cache=True)
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
def _contract_into_serial(
    target, src_a, src_b, src_c, base, counts, strides, coef, slot_t, slot_a, slot_b, slot_c
):
    """:func:`_contract_into` in a plain loop (one thread: the OpenMP pool is never woken)."""
    for z in range(target.shape[0]):
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


@numba.njit(parallel=True, cache=True)
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
def _input_gradients_serial(g1, g2, gw, grad_out, x1, x2, w, base, counts, strides, coef):
    """:func:`_input_gradients` in a plain loop (one thread: the OpenMP pool is never woken)."""
    for z in range(grad_out.shape[0]):
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


class SparseTerms:
    """The nonzero CG entries of some instructions, each with its channel loops, executed by
    :func:`_contract_into`.

    Columns are flat mul_ir columns of ``out``, ``x1``, ``x2`` and ``w_ext``, where ``w_ext`` is
    the flat weight with one extra column of ones that unweighted paths point to. The channel
    loops of each mode (outer to inner; strides in slot order out, x1, x2, w) put the input
    channel ``u`` innermost where it exists, so consecutive terms touch nearby columns.
    """

    def __init__(self, backend: CGBackend, name: str, instruction_ids):
        d = backend.descriptor
        self.backend, self.name = backend, name
        weight_slices = d.weight_slices()
        self.has_unweighted = any(not d.instructions[k].has_weight for k in instruction_ids)
        ones_column = d.weight_numel
        starts1, starts2, starts_out = (
            [s.start for s in irreps.slices()] for irreps in (d.irreps_in1, d.irreps_in2, d.irreps_out)
        )
        bases, counts, strides, coefs = [], [], [], []
        for k in instruction_ids:
            ins = d.instructions[k]
            (m1, ir1), (m2, ir2), (mo, iro) = (
                d.irreps_in1[ins.i_in1],
                d.irreps_in2[ins.i_in2],
                d.irreps_out[ins.i_out],
            )
            cg = ins.coefficient * so3.wigner_3j(ir1.l, ir2.l, iro.l)
            e1, e2, eo = np.nonzero(np.abs(cg) > _CG_ZERO)  # nonzero CG entries
            loops = _channel_loops(ins.mode, m1, m2, mo, ir1.dim, ir2.dim, iro.dim)
            if not ins.has_weight:
                loops = [(n, (so, s1, s2, 0)) for n, (so, s1, s2, _) in loops]
            w_base = weight_slices[k].start if ins.has_weight else ones_column
            base = np.stack([starts_out[ins.i_out] + eo, starts1[ins.i_in1] + e1, starts2[ins.i_in2] + e2,
                             np.full_like(e1, w_base)], -1)  # fmt: skip
            bases.append(base)
            counts.append(np.tile([n for n, _ in loops], (len(e1), 1)))
            strides.append(np.tile([s for _, s in loops], (len(e1), 1, 1)))
            coefs.append(cg[e1, e2, eo])
        self.base = np.ascontiguousarray(np.concatenate(bases), dtype=np.int64)  # [E, 4]
        self.counts = np.ascontiguousarray(np.concatenate(counts), dtype=np.int64)  # [E, 3]
        self.strides = np.ascontiguousarray(np.concatenate(strides), dtype=np.int64)  # [E, 3, 4]
        self.coef = np.concatenate(coefs).astype(np.float64)  # [E]
        # the custom ops' constants (CPU tensors sharing the arrays' memory)
        self.tables = [torch.from_numpy(a) for a in (self.base, self.counts, self.strides, self.coef)]
        self.widths = (
            d.irreps_out.dim,
            d.irreps_in1.dim,
            d.irreps_in2.dim,
            d.weight_numel + self.has_unweighted,
        )

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        z = x1.shape[0]
        if weight is None:
            w = x1.new_ones(1, 1)
        else:
            w = weight if weight.ndim == 2 else weight.unsqueeze(0)
            if self.has_unweighted:
                w = torch.cat([w, w.new_ones(w.shape[0], 1)], dim=1)
        # Shared weights become a zero-stride [Z, n_w] view: the kernel reads the same row for
        # every sample and autograd sums the per-sample weight gradients back.
        w = w.expand(z, w.shape[1])
        return SPARSE_OPS.forward(x1.contiguous(), x2.contiguous(), w, z, self.widths[OUT], self.tables)


def _kernel_operands(tensors, rows: int) -> list[np.ndarray]:
    """numpy views ``[rows, width]`` of the operands; a zero-row-stride (shared) operand stays one."""
    operands = [t.detach().expand(rows, t.shape[1]) for t in tensors]
    return [(t if t.stride(1) == 1 else t.contiguous()).numpy() for t in operands]


def _sparse_contract(target, sources, rows, width, tables):
    """CPU implementation of ``equitensor::cg_sparse_contract`` (:func:`_contract_into`)."""
    base, counts, strides, coef = (t.numpy() for t in tables)
    result = torch.empty(rows, width, dtype=sources[0].dtype)
    kernel = _contract_into if use_parallel_kernels() else _contract_into_serial
    slots = [s for s in SLOTS if s != target]
    coef = coef.astype(result.numpy().dtype)
    kernel(result.numpy(), *_kernel_operands(sources, rows), base, counts, strides, coef, target, *slots)
    return result


def _sparse_input_gradients(grad_out, x1, x2, w, tables):
    """CPU implementation of ``equitensor::cg_sparse_input_gradients`` (:func:`_input_gradients`)."""
    base, counts, strides, coef = (t.numpy() for t in tables)
    z = grad_out.shape[0]
    grads = [torch.zeros(t.shape, dtype=grad_out.dtype) for t in (x1, x2, w)]
    kernel = _input_gradients if use_parallel_kernels() else _input_gradients_serial
    coef = coef.astype(grads[0].numpy().dtype)
    kernel(*(g.numpy() for g in grads), *_kernel_operands((grad_out, x1, x2, w), z), base, counts, strides, coef)
    return tuple(grads)


#: ``equitensor::cg_sparse_contract`` / ``equitensor::cg_sparse_input_gradients``; tables
#: ``[base [E, 4], counts [E, 3], strides [E, 3, 4] (int64), coef [E] (float64)]`` of :class:`SparseTerms`.
SPARSE_OPS = define_multilinear_ops("cg_sparse", _sparse_contract, _sparse_input_gradients)


# --------------------------------------------------------------------------------------------
# grouped: paths with one mode and multiplicities stacked, one einsum per group

_GROUP_EINSUM = {
    # x1 [z,p,u,i], x2 [z,p,v,j], C [p,i,j,k], weights [(z),p,...] -> [z, p, out channel, k]
    "uvw": "zpui,zpvj,pijk,{z}puvw->zpwk",
    "uvu": "zpui,zpvj,pijk,{z}puv->zpuk",
    "uvv": "zpui,zpvj,pijk,{z}puv->zpvk",
    "uuw": "zpui,zpuj,pijk,{z}puw->zpwk",
    "uuu": "zpui,zpuj,pijk,{z}pu->zpuk",
}
_GROUP_UNWEIGHTED = {
    "uvu": "zpui,zpvj,pijk->zpuk",
    "uvv": "zpui,zpvj,pijk->zpvk",
    "uuu": "zpui,zpuj,pijk->zpuk",
}


class BilinearMatrix:
    """Shared weights: ``out = (x1 ⊗ x2).reshape(Z, dim1 * dim2) @ M(w)`` (method ``dense``).

    ``M`` is assembled per call from the unrolled term list of :class:`SparseTerms` (every CG
    entry x channel combination as explicit ``(row, column, weight column, coefficient)``), so
    its gradient w.r.t. the weights is the ``index_put`` backward; everything is plain torch.
    """

    def __init__(self, backend: CGBackend, name: str, instruction_ids):
        d = backend.descriptor
        terms = SparseTerms(backend, f"{name}_terms", instruction_ids)
        n_loop = np.prod(terms.counts, axis=1)  # [E] channel combinations of each CG entry
        entry = np.repeat(np.arange(len(n_loop)), n_loop)
        within = np.arange(entry.size) - np.repeat(np.cumsum(n_loop) - n_loop, n_loop)
        c1, c2 = terms.counts[entry, 1], terms.counts[entry, 2]
        steps = np.stack([within // (c1 * c2), (within // c2) % c1, within % c2], axis=1)  # [T, 3]
        cols = terms.base[entry] + np.einsum("tl,tls->ts", steps, terms.strides[entry])  # [T, 4] out,x1,x2,w
        self.dim1, self.dim2, self.dim_out = d.irreps_in1.dim, d.irreps_in2.dim, d.irreps_out.dim
        self.has_unweighted = terms.has_unweighted
        self.rows = torch.as_tensor(cols[:, 1] * self.dim2 + cols[:, 2])
        self.columns = torch.as_tensor(cols[:, 0])
        self.weight_columns = torch.as_tensor(cols[:, 3])
        backend.add_table(f"{name}_coef", terms.coef[entry])  # the coefficient of every matrix entry
        self.backend, self.name = backend, name

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        w = x1.new_ones(1) if weight is None else weight
        if self.has_unweighted and weight is not None:
            w = torch.cat([w, w.new_ones(1)])
        idx = [t.to(x1.device) for t in (self.rows, self.columns, self.weight_columns)]
        values = self.backend.table(f"{self.name}_coef", x1) * w[idx[2]]
        matrix = x1.new_zeros(self.dim1 * self.dim2, self.dim_out).index_put(
            (idx[0], idx[1]), values, accumulate=True
        )
        outer = (x1[:, :, None] * x2[:, None, :]).reshape(x1.shape[0], self.dim1 * self.dim2)
        return outer @ matrix


class GroupedPaths:
    """Paths grouped by ``(mode, has_weight, mul1, mul2, mul_out)``; one batched einsum per group.

    Per group, index tables gather ``x1 -> [Z, P, mul1, d1_max]`` and ``x2 -> [Z, P, mul2,
    d2_max]`` (padding points to an appended zero column), the padded CG blocks ``[P, d1_max,
    d2_max, do_max]`` are one table, weights are gathered to ``[(Z,) P, *weight_shape]``, and the
    result ``[Z, P, mul_out, do_max]`` is added into the output columns with one ``index_add``
    (padding goes to a discarded extra column). The loop runs over groups, never over paths.
    """

    def __init__(self, backend: CGBackend, name: str, instruction_ids):
        d = backend.descriptor
        self.backend, self.name = backend, name
        keys: dict[tuple, list[int]] = {}
        for k in instruction_ids:
            ins = d.instructions[k]
            key = (
                ins.mode,
                ins.has_weight,
                d.irreps_in1[ins.i_in1].mul,
                d.irreps_in2[ins.i_in2].mul,
                d.irreps_out[ins.i_out].mul,
            )
            keys.setdefault(key, []).append(k)
        weight_slices = d.weight_slices()
        self.groups = []
        for g, ((mode, has_weight, _m1, _m2, _mo), ks) in enumerate(keys.items()):
            instructions = [d.instructions[k] for k in ks]
            irs = [d.path_irreps(ins) for ins in instructions]
            d1, d2, do = (max(ir[c].dim for ir in irs) for c in range(3))
            cg = np.zeros((len(ks), d1, d2, do))
            for p, (ir1, ir2, iro) in enumerate(irs):
                cg[p, : ir1.dim, : ir2.dim, : iro.dim] = instructions[p].coefficient * so3.wigner_3j(
                    ir1.l, ir2.l, iro.l
                )
            backend.add_table(f"{name}_cg_{g}", cg)
            group = {
                "mode": mode,
                "cg": f"{name}_cg_{g}",
                "x1": _padded_columns(d.irreps_in1, [ins.i_in1 for ins in instructions], d1),
                "x2": _padded_columns(d.irreps_in2, [ins.i_in2 for ins in instructions], d2),
                "out": _padded_columns(d.irreps_out, [ins.i_out for ins in instructions], do).reshape(-1),
                "weight": None,
            }
            if has_weight:
                shape = instructions[0].weight_shape
                group["weight"] = torch.stack(
                    [torch.arange(weight_slices[k].start, weight_slices[k].stop).reshape(shape) for k in ks]
                )
            self.groups.append(group)

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        d = self.backend.descriptor
        z = x1.shape[0]
        x1 = torch.cat([x1, x1.new_zeros(z, 1)], dim=1)  # the padding column
        x2 = torch.cat([x2, x2.new_zeros(z, 1)], dim=1)
        out = x1.new_zeros(z, d.irreps_out.dim + 1)
        for group in self.groups:
            device = x1.device
            cg = self.backend.table(group["cg"], x1)
            a, b = x1[:, group["x1"].to(device)], x2[:, group["x2"].to(device)]
            if group["weight"] is None:
                y = torch.einsum(_GROUP_UNWEIGHTED[group["mode"]], a, b, cg)
            else:
                idx = group["weight"].to(device)
                per_sample = weight.ndim == 2
                w = weight[:, idx] if per_sample else weight[idx]
                y = torch.einsum(
                    _GROUP_EINSUM[group["mode"]].format(z="z" if per_sample else ""), a, b, cg, w
                )
            out = out.index_add(1, group["out"].to(device), y.reshape(z, group["out"].numel()))
        return out[:, :-1]


def _padded_columns(irreps, blocks: list[int], width: int) -> torch.Tensor:
    """Flat mul_ir columns ``[P, mul, width]`` of each listed block; padding -> ``irreps.dim``."""
    slices = list(irreps.slices())
    rows = []
    for i in blocks:
        mul, ir = irreps[i]
        cols = np.full((mul, width), irreps.dim)
        cols[:, : ir.dim] = slices[i].start + np.arange(mul)[:, None] * ir.dim + np.arange(ir.dim)
        rows.append(cols)
    return torch.as_tensor(np.stack(rows), dtype=torch.long)
