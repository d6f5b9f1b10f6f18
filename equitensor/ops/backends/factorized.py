"""Shared machinery of the factorised backends (``gaunt_grid``, ``gaunt_fft``, ``cp``).

These backends do not weight each path; they compute, per channel, *one* bilinear product of
two functions assembled from several input blocks ("evaluate, multiply, project"):

    out[io] = coefficient[io] * w_out[io] * P_l3( (sum_{i1 in S1} w1[i1] x1[i1]) ⊛ (sum_{i2 in S2} w2[i2] x2[i2]) )

where ``⊛`` is the backend's product (Gaunt: pointwise product of the spherical functions;
cp: the low-rank shared-path CG product), ``P_l3`` keeps degree ``l3`` of ``irreps_out[io]``
and ``coefficient[io]`` is e3nn's path normalisation of the descriptor (it must be the same
for every path into ``io``, which holds for the default normalisations).

A :class:`ProductUnit` is one such product: the input blocks ``S1``, ``S2`` it sums and the
output blocks it feeds. The planner splits the descriptor's instructions into units so that
every unit realises *exactly* the requested couplings: inputs are split by parity class
(natural ``p = (-1)^l`` or pseudo), and when the requested couplings into an output are not
a full product set ``S1 x S2`` they are split per input-1 block (or per input-2 block).

Weight layout (``weight_numel``, per sample or shared), when the instructions have weights:

    [ w1: for each block of irreps_in1, its mul1 channel weights |
      w2: for each block of irreps_in2, its mul2 channel weights |
      w_out: for each block of irreps_out, its mul_out channel weights ]

i.e. one weight per channel and per degree on both inputs and on the output (the factorised
weights of Luo et al. 2024). Connection modes: ``uvu`` (``out_u = P(f1_u * sum_v f2_v)``, e.g.
MACE's convolution with edge harmonics of multiplicity 1), ``uvv`` (mirror image) and ``uuu``
(``out_u = P(f1_u * f2_u)``, channel-wise self-products). Channel mixing (``uvw``) is left to
:class:`~equitensor.ops.linear.Linear` layers around the product.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from ... import so3
from .base import ConstantTables, Path, TensorProductBackend

SUPPORTED_MODES = ("uvu", "uvv", "uuu")
#: the tables of every product (:class:`UnitConstants`): evaluate input 1, input 2, project
TABLES = ("left", "right", "back")


class ProductUnit(NamedTuple):
    """One evaluate-multiply-project product: summed input blocks and the output blocks it feeds."""

    blocks1: tuple[int, ...]
    blocks2: tuple[int, ...]
    outputs: tuple[int, ...]
    odd_paths: bool  # parity of l1 + l2 + l3 of every coupling this unit realises


def parity_class(ir) -> int:
    """+1 for natural parity (``p = (-1)^l``: 0e, 1o, 2e, ...), -1 for pseudo (0o, 1e, 2o, ...)."""
    return 1 if ir.p == (-1) ** ir.l else -1


def plan_units(descriptor, odd_paths_realisable: bool, allow_subset: bool, backend_name: str):
    """Split the descriptor's instructions into :class:`ProductUnit` s realising exactly them.

    Returns:
        ``(units, realised_instruction_indices)``.

    Raises:
        ValueError: a requested coupling has odd ``l1 + l2 + l3`` and the backend cannot realise
            it (unless ``allow_subset``, which drops it with a warning).
    """
    d = descriptor
    realised, unrealisable = [], []
    for k, ins in enumerate(d.instructions):
        ir1, ir2, iro = d.path_irreps(ins)
        if (ir1.l + ir2.l + iro.l) % 2 and not odd_paths_realisable:
            unrealisable.append((k, f"{ir1} x {ir2} -> {iro}"))
        else:
            realised.append(k)
    if unrealisable:
        names = ", ".join(name for _, name in unrealisable)
        if not allow_subset:
            raise ValueError(
                f"backend {backend_name!r} cannot realise the couplings {names}: a Gaunt product only has paths "
                "with l1 + l2 + l3 even (its selection rule); use backend='cg' or 'cp' for them, or pass "
                "allow_subset=True to drop them (they are then missing from `paths`)"
            )
        warnings.warn(
            f"backend {backend_name!r} drops the unrealisable couplings {names} (allow_subset=True)",
            stacklevel=4,
        )

    # For each parity-class pair, the input blocks used by any output: a product over these
    # wider sets often realises exactly the requested couplings too (the extra pairs fail the
    # triangle rule), and then every output shares one product.
    class_blocks: dict[tuple[int, int], tuple[set, set]] = {}
    for k in realised:
        ins = d.instructions[k]
        key = (parity_class(d.irreps_in1[ins.i_in1].ir), parity_class(d.irreps_in2[ins.i_in2].ir))
        blocks = class_blocks.setdefault(key, (set(), set()))
        blocks[0].add(ins.i_in1)
        blocks[1].add(ins.i_in2)

    merged: dict[tuple, list[int]] = {}
    for io in range(len(d.irreps_out)):
        by_class: dict[tuple[int, int], set] = {}
        for k in realised:
            ins = d.instructions[k]
            if ins.i_out == io:
                key = (parity_class(d.irreps_in1[ins.i_in1].ir), parity_class(d.irreps_in2[ins.i_in2].ir))
                by_class.setdefault(key, set()).add((ins.i_in1, ins.i_in2))
        l3 = d.irreps_out[io].ir.l
        for key, pairs in by_class.items():
            i1, i2 = next(iter(pairs))
            odd = bool((d.irreps_in1[i1].ir.l + d.irreps_in2[i2].ir.l + l3) % 2)
            wide = tuple(sorted(class_blocks[key][0])), tuple(sorted(class_blocks[key][1]))
            for s1, s2 in _product_sets(d, pairs, l3, odd, wide):
                merged.setdefault((s1, s2, odd), []).append(io)
    units = [ProductUnit(s1, s2, tuple(outs), odd) for (s1, s2, odd), outs in merged.items()]
    return units, realised


def _product_sets(d, pairs: set, l3: int, odd: bool, wide: tuple) -> list[tuple[tuple, tuple]]:
    """Cover ``pairs`` by product sets whose realisable couplings are exactly ``pairs``.

    Tries the ``wide`` sets (shared with other outputs) first, then the blocks of ``pairs``,
    then one product per input-1 (or input-2) block.
    """

    def realisable(s1, s2):
        return {
            (i1, i2)
            for i1 in s1
            for i2 in s2
            if so3.triangle(d.irreps_in1[i1].ir.l, d.irreps_in2[i2].ir.l, l3)
            and (d.irreps_in1[i1].ir.l + d.irreps_in2[i2].ir.l + l3) % 2 == odd
        }

    if realisable(*wide) == pairs:
        return [wide]
    s1, s2 = tuple(sorted({a for a, _ in pairs})), tuple(sorted({b for _, b in pairs}))
    if realisable(s1, s2) == pairs:
        return [(s1, s2)]
    by_first = [((a,), tuple(sorted(b for x, b in pairs if x == a))) for a in s1]
    by_second = [(tuple(sorted(a for a, y in pairs if y == b)), (b,)) for b in s2]
    return by_first if len(by_first) <= len(by_second) else by_second


class UnitConstants(ConstantTables, torch.nn.Module):
    """The constants of one product: a :class:`ProductUnit`, or all merged pointwise units.

    Index buffers (int64, non-persistent: rebuilt from the descriptor, never saved; they follow
    ``.to(device)`` and stay int64 under ``.to(dtype)``):

    * ``gather1 [U1, sum d1]``, ``gather2 [U2, sum d2]``: the components of ``x1`` / ``x2`` that
      the product reads, channel-major (``U1``, ``U2``: the blocks' multiplicity);
    * ``scatter_out [U * sum d_out]``: where its projected outputs ``[U, sum d_out]`` land in ``out``.

    Tables (float64 masters handed out per dtype and device by :meth:`table`, so ``.float()``
    never rounds them): ``"left" [sum d1, K1]``, ``"right" [sum d2, K2]`` and ``"back" [K3, sum
    d_out]`` (the output path coefficients folded in); a subclass may add its own (``gaunt_fft``'s
    adjoints, its ``"direct"`` route's index buffer).

    Plain attributes, constants for dynamo's guards: ``mul_out`` (``U``) and ``identity``, whether
    ``gather1`` / ``gather2`` / ``scatter_out`` read (write) the whole tensor in order, so that
    the gather (scatter) is a reshape.
    """

    def __init__(
        self,
        gather1: np.ndarray | torch.Tensor,
        gather2: np.ndarray | torch.Tensor,
        scatter_out: np.ndarray | torch.Tensor,
        tables: dict[str, np.ndarray],
        identity: tuple[bool, bool, bool],
        mul_out: int,
    ):
        super().__init__()
        self._init_tables()
        for name, index in (("gather1", gather1), ("gather2", gather2), ("scatter_out", scatter_out)):
            self.register_buffer(name, torch.as_tensor(index, dtype=torch.int64), persistent=False)
        for name, table in tables.items():
            self.add_table(name, table)
        self.identity, self.mul_out = tuple(bool(flag) for flag in identity), int(mul_out)

    def extra_repr(self) -> str:
        shapes = tuple(self.gather1.shape), tuple(self.gather2.shape)
        return f"gather1={shapes[0]}, gather2={shapes[1]}, mul_out={self.mul_out}"


class FactorizedBackend(TensorProductBackend):
    """Base of the evaluate-multiply-project backends (see the module docstring for semantics).

    Subclasses implement :meth:`unit_tables` (numpy float64 ``left [sum d1, K1]``,
    ``right [sum d2, K2]``, ``back [K3, sum d_out]``) and may override :meth:`combine`
    (default: pointwise product, ``K1 = K2 = K3``) or, for a whole custom route with its own
    autograd Function, :meth:`product`. The projection table is stored with the output path
    coefficient folded into its columns.

    Each unit's tables and gather / scatter indices live in its :class:`UnitConstants`,
    ``unit_constants[k]`` (``k`` the unit's position in ``units``, which the hooks receive);
    ``merged_constants`` holds the merged product's (:meth:`_build_merged_plan`).
    """

    parameterization = "per_degree"
    supported_modes = SUPPORTED_MODES
    realises_odd_paths = False
    #: run pointwise units (:meth:`is_pointwise`) through :class:`ChunkedPointwiseProduct` on CPU;
    #: an instance may turn it off to compare with the whole-batch product
    chunked_pointwise = True

    def __init__(self, descriptor, allow_subset: bool = False):
        super().__init__(descriptor)
        d = descriptor
        name = type(self).__name__
        modes = {ins.mode for ins in d.instructions}
        if len(modes) > 1 or (modes and not modes <= set(SUPPORTED_MODES)):
            raise ValueError(
                f"{name} supports one connection mode among {SUPPORTED_MODES} per product, got {sorted(modes)}; "
                "mix channels with Linear layers around the product instead of uvw/uuw"
            )
        self.mode = modes.pop() if modes else "uvu"
        has_weight = {ins.has_weight for ins in d.instructions}
        if len(has_weight) > 1:
            raise ValueError(f"{name} weights all paths or none (its weights are per degree, not per path)")
        self.weighted = has_weight == {True}
        self.units, realised = plan_units(d, self.realises_odd_paths, allow_subset, self.backend_name)
        self.paths = tuple(
            Path(
                *d.path_irreps(d.instructions[k]),
                d.instructions[k].i_in1,
                d.instructions[k].i_in2,
                d.instructions[k].i_out,
            )
            for k in realised
        )
        self.output_coefficient = [0.0] * len(d.irreps_out)
        for k in realised:
            ins = d.instructions[k]
            previous = self.output_coefficient[ins.i_out]
            if previous and not math.isclose(previous, ins.coefficient, rel_tol=1e-12):
                raise ValueError(
                    f"{name}: the paths into output block {ins.i_out} ({d.irreps_out[ins.i_out]}) have different "
                    "normalisation coefficients, which a single product cannot realise; use path_normalization="
                    "'element' or 'none' and equal path weights"
                )
            self.output_coefficient[ins.i_out] = ins.coefficient
        for unit in self.units:
            for side, irreps, blocks in (
                ("input 1", d.irreps_in1, unit.blocks1),
                ("input 2", d.irreps_in2, unit.blocks2),
            ):
                if len({irreps[i].mul for i in blocks}) > 1:
                    raise ValueError(
                        f"{name}: blocks {[str(irreps[i]) for i in blocks]} of {side} share a product but differ in multiplicity"
                    )
        n1, n2, no = (sum(mul for mul, _ in irreps) for irreps in (d.irreps_in1, d.irreps_in2, d.irreps_out))
        self.weight_numel = n1 + n2 + no if self.weighted else 0
        self._weight_offsets = (0, n1, n1 + n2)
        self._build_weight_index()
        # a plain int for forward: it reads no Irreps object, so dynamo guards nothing on them
        self._dim_out = d.irreps_out.dim
        #: one :class:`UnitConstants` per unit (in the order of ``units``)
        self.unit_constants = torch.nn.ModuleList(self._build_unit_constants(unit) for unit in self.units)
        self._build_merged_plan()

    backend_name = "factorized"

    # -- hooks -------------------------------------------------------------------------------
    def unit_tables(self, unit: ProductUnit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def combine(self, k: int, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """Product of the two evaluated functions ``[z, U, K]`` (broadcast over ``U``)."""
        return f1 * f2

    def is_pointwise(self, k: int) -> bool:
        """Whether unit ``k`` combines by the plain pointwise product (then it may run chunked)."""
        return type(self).combine is FactorizedBackend.combine

    # -- helpers for subclasses ---------------------------------------------------------------
    def unit_degrees(self, unit: ProductUnit) -> tuple[int, int, int]:
        """Highest degree of input 1, input 2 and the outputs of a unit."""
        d = self.descriptor
        return (
            max(d.irreps_in1[i].ir.l for i in unit.blocks1),
            max(d.irreps_in2[i].ir.l for i in unit.blocks2),
            max(d.irreps_out[i].ir.l for i in unit.outputs),
        )

    @staticmethod
    def degree_rows(irreps, blocks) -> np.ndarray:
        """Indices into a ``(lmax+1)^2`` degree-major axis for the components of ``blocks``."""
        return np.concatenate([np.arange(irreps[i].ir.l ** 2, (irreps[i].ir.l + 1) ** 2) for i in blocks])

    # -- execution ----------------------------------------------------------------------------
    def _build_weight_index(self) -> None:
        """``weight_index_{1,2,out} [dim]``: the weight of each component (mul_ir layout), so that
        forward weighs a whole input with one ``index_select`` instead of one op per block."""
        d = self.descriptor
        off1, off2, off_out = self._weight_offsets
        self.register_buffer("weight_index_1", _component_weights(d.irreps_in1, off1), persistent=False)
        self.register_buffer("weight_index_2", _component_weights(d.irreps_in2, off2), persistent=False)
        self.register_buffer("weight_index_out", _component_weights(d.irreps_out, off_out), persistent=False)

    def _build_unit_constants(self, unit: ProductUnit) -> UnitConstants:
        """Tables (from :meth:`unit_tables`, path coefficients folded in) and gather / scatter
        indices of one unit, so that forward runs a handful of ops instead of one per block."""
        d = self.descriptor
        left, right, back = self.unit_tables(unit)
        # fold e3nn's path coefficient of each output block into the projection's columns
        coefficient = np.concatenate(
            [np.full(d.irreps_out[io].ir.dim, self.output_coefficient[io]) for io in unit.outputs]
        )
        indices = (
            _block_positions(d.irreps_in1, unit.blocks1),
            _block_positions(d.irreps_in2, unit.blocks2),
            _block_positions(d.irreps_out, unit.outputs).reshape(-1),
        )
        # a gather (scatter) that reads (writes) the whole tensor in order is a reshape: with one
        # channel and the blocks in order (e.g. MIMO) the product then needs no index copies
        identity = tuple(
            np.array_equal(index.reshape(-1), np.arange(dim))
            for index, dim in zip(indices, (d.irreps_in1.dim, d.irreps_in2.dim, d.irreps_out.dim))
        )
        tables = {"left": left, "right": right, "back": back * coefficient[None, :]}
        return UnitConstants(*indices, tables, identity, mul_out=d.irreps_out[unit.outputs[0]].mul)

    def _build_merged_plan(self) -> None:
        """One product for all pointwise units (:meth:`is_pointwise`) when they share multiplicities.

        ``merged_constants`` (a :class:`UnitConstants`, or ``None`` when the units do not merge)
        holds the units' tables as block-diagonal ones (``left [sum d1, sum K]``, ``right``,
        ``back [sum K, sum d_out]``) and their gathers / scatters concatenated, so the
        whole product is two gathers, three GEMMs, one pointwise product and one ``index_add``,
        however many units there are (MACE's convolution with one output block per path has one
        unit per input block pair); units with another combine (``gaunt_fft``'s ``"direct"``
        and ``"fft"``) run on their own beside it. The zero blocks cost flops but no extra launches: this form
        runs where :func:`eager_cpu_kernel_allowed` is false (GPUs, ``torch.compile``), while eager
        CPU runs keep one (chunked) product per unit.
        """
        merged, self._unmerged_units = None, tuple(range(len(self.units)))
        pointwise = [k for k in range(len(self.units)) if self.is_pointwise(k)]
        parts = [self.unit_constants[k] for k in pointwise]
        shapes = {(part.gather1.shape[0], part.gather2.shape[0]) for part in parts}
        if len(parts) >= 2 and len(shapes) == 1 and len({part.mul_out for part in parts}) == 1:
            mul_out = parts[0].mul_out
            tables = {name: _block_diagonal([part.master(name) for part in parts]) for name in TABLES}
            merged = UnitConstants(
                torch.cat([part.gather1 for part in parts], dim=1),
                torch.cat([part.gather2 for part in parts], dim=1),
                torch.cat([part.scatter_out.reshape(mul_out, -1) for part in parts], dim=1).reshape(-1),
                tables,
                identity=(False, False, False),
                mul_out=mul_out,
            )
            self._unmerged_units = tuple(k for k in range(len(self.units)) if k not in pointwise)
        self.merged_constants: UnitConstants | None = merged
        self._merged = merged is not None

    def forward(self, x1, x2, weight):
        z, dim_out = x1.shape[0], self._dim_out
        if self.weighted:
            weight = weight.unsqueeze(0) if weight.ndim == 1 else weight  # [Z or 1, weight_numel]
            x1 = x1 * weight.index_select(1, self.weight_index_1)
            x2 = x2 * weight.index_select(1, self.weight_index_2)
        if self._merged and not eager_cpu_kernel_allowed(x1):
            # k = None: the merged product, then the units that are not part of it
            unmerged = ((k, self.unit_constants[k]) for k in self._unmerged_units)
            steps = [(None, self.merged_constants), *unmerged]
        else:
            steps = enumerate(self.unit_constants)
        out = None
        for k, constants in steps:
            identity1, identity2, identity_out = constants.identity
            left = _gather(x1, constants.gather1, identity1, z)  # [z, mul1, sum d1]
            right = _gather(x2, constants.gather2, identity2, z)  # [z, mul2, sum d2]
            if self.mode == "uvu":  # out_u = P(f1_u * sum_v f2_v)
                right = right.sum(1, keepdim=True) if right.shape[1] > 1 else right
            elif self.mode == "uvv":
                left = left.sum(1, keepdim=True) if left.shape[1] > 1 else left
            if k is None:  # the block-diagonal pointwise product of all merged units
                t1, t2, back = (constants.table(name, left) for name in TABLES)
                projected = ((left @ t1) * (right @ t2)) @ back
            else:
                projected = self.product(k, constants, left, right)  # [z, U, sum d_out]
            scatter = constants.scatter_out
            projected = projected.expand(z, constants.mul_out, projected.shape[-1])
            projected = projected.reshape(z, scatter.numel())
            if identity_out and len(self.units) == 1:
                out = projected
            else:
                out = (x1.new_zeros(z, dim_out) if out is None else out).index_add(1, scatter, projected)
        if out is None:
            out = x1.new_zeros(z, dim_out)
        if self.weighted:
            out = out * weight.index_select(1, self.weight_index_out)
        return out

    def product(
        self, k: int, constants: UnitConstants, left: torch.Tensor, right: torch.Tensor
    ) -> torch.Tensor:
        """Evaluate, combine and project unit ``k``: ``[z, U1, d1] x [z, U2, d2] -> [z, U, d_out]``.

        ``constants`` is ``unit_constants[k]``, handed in by forward, which holds it already.
        """
        t1, t2, back = (constants.table(name, left) for name in TABLES)
        if (
            self.chunked_pointwise
            and self.is_pointwise(k)
            and max(t1.shape[0], t2.shape[0]) <= CHUNK_MAX_INPUT_DIM
            and left.shape[0] == right.shape[0]
            and eager_cpu_kernel_allowed(left)
        ):
            return ChunkedPointwiseProduct.apply(left, right, t1, t2, back)
        # the plain form: three GEMMs over the whole batch (z * U rows each), one pointwise op
        return self.combine(k, left @ t1, right @ t2) @ back

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode}, units={len(self.units)}"


def eager_cpu_kernel_allowed(like: torch.Tensor) -> bool:
    """Whether a CPU-only eager autograd Function (chunked loops, ``out=`` writes) may run.

    It may not while ``torch.compile`` traces (inductor fuses and tiles the plain form itself,
    and the chunk loops with in-place writes into saved buffers are not traceable), off the CPU
    (one kernel launch per chunk would cost more than the cache locality gains; the plain form
    is a few large batched GEMMs there) or under functorch transforms (vmap/jacfwd need the
    plain ops).
    """
    if torch.compiler.is_compiling():
        return False
    return like.device.type == "cpu" and not torch._C._are_functorch_transforms_active()


#: floats of one evaluated function per chunk of :class:`ChunkedPointwiseProduct` (1 MB in
#: float32: the per-chunk temporaries stay in cache, and each chunk is large enough that torch's
#: per-op overhead does not dominate); chunks never go below ``CHUNK_MIN_ROWS`` samples.
#: ``benchmarks/cpu_execution.py --tasks chunked`` times it against the whole-batch product.
CHUNK_FLOATS = 1 << 18
#: chunk only products whose inputs have at most this many components per channel: their
#: GEMMs are memory-bound (a small inner dimension), so keeping the temporaries in cache pays;
#: wider ones (MIMO at L >= 5: 36+ components) are compute-bound GEMMs, where chunks gain nothing
#: reliable (the same script measures MIMO with this gate lifted).
CHUNK_MAX_INPUT_DIM = 32
CHUNK_MIN_ROWS = 16


class ChunkedPointwiseProduct(torch.autograd.Function):
    """``((left @ t1) * (right @ t2)) @ back`` over chunks of the batch.

    ``left [z, U1, d1]``, ``right [z, U2, d2]`` (``U1``, ``U2`` equal or 1), constant tables
    ``t1 [d1, K]``, ``t2 [d2, K]``, ``back [K, d_out]`` -> ``[z, U, d_out]``. The two evaluated
    functions are kept for the backward (as autograd would keep them); their product, the
    gradient on the samples and its two pointwise products live only per chunk, in cache,
    instead of as whole-batch tensors streamed through memory. A backward that builds a graph
    runs the differentiable whole-batch formula, so higher derivatives work.
    """

    @staticmethod
    def forward(ctx, left, right, t1, t2, back):
        z, channels = left.shape[0], max(left.shape[1], right.shape[1])
        out = left.new_empty(z, channels, back.shape[1])
        f1 = left.new_empty(*left.shape[:2], t1.shape[1])
        f2 = right.new_empty(*right.shape[:2], t2.shape[1])
        for rows in _chunk_slices(z, channels * t1.shape[1]):
            product = torch.matmul(left[rows], t1, out=f1[rows]) * torch.matmul(right[rows], t2, out=f2[rows])
            torch.matmul(product, back, out=out[rows])
        ctx.save_for_backward(left, right, t1, t2, back, f1, f2)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        left, right, t1, t2, back, f1, f2 = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiable ops over the whole batch
            f1, f2, grad_h = left @ t1, right @ t2, grad_out @ back.T
            return (
                (grad_h * f2).sum_to_size(f1.shape) @ t1.T,
                (grad_h * f1).sum_to_size(f2.shape) @ t2.T,
                None, None, None,
            )  # fmt: skip
        grad_left, grad_right = torch.empty_like(left), torch.empty_like(right)
        z, channels = left.shape[0], max(left.shape[1], right.shape[1])
        for rows in _chunk_slices(z, channels * t1.shape[1]):
            grad_h = grad_out[rows] @ back.T
            torch.matmul((grad_h * f2[rows]).sum_to_size(f1[rows].shape), t1.T, out=grad_left[rows])
            torch.matmul(grad_h.mul_(f1[rows]).sum_to_size(f2[rows].shape), t2.T, out=grad_right[rows])
        return grad_left, grad_right, None, None, None


def _gather(x: torch.Tensor, index: torch.Tensor, identity: bool, z: int) -> torch.Tensor:
    """``x [z, dim]`` -> ``x[:, index] [z, *index.shape]``; a reshape when ``index`` reads ``x`` in order.

    ``z`` is passed in (not read from ``x``) so that a traced graph reads the batch size once.
    """
    if identity:
        return x.reshape(z, *index.shape)
    return x.index_select(1, index.reshape(-1)).reshape(z, *index.shape)


def _component_weights(irreps, offset: int) -> torch.Tensor:
    """``[irreps.dim]`` int64: the index of each component's channel weight, counted from ``offset``."""
    index, start = [], offset
    for mul, ir in irreps:
        index.append(np.repeat(np.arange(start, start + mul), ir.dim))
        start += mul
    return torch.as_tensor(np.concatenate(index) if index else np.zeros(0), dtype=torch.int64)


def _block_positions(irreps, blocks) -> np.ndarray:
    """``[mul, sum d]``: positions in the mul_ir layout of ``blocks``' components, channel-major
    (row ``u`` lists channel ``u`` of every block in turn; the blocks share ``mul``)."""
    slices = list(irreps.slices())
    rows = [
        np.concatenate([slices[b].start + u * irreps[b].ir.dim + np.arange(irreps[b].ir.dim) for b in blocks])
        for u in range(irreps[blocks[0]].mul)
    ]
    return np.stack(rows)


def _block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    """The block-diagonal matrix of 2D ``blocks`` (float64)."""
    rows, cols = sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, cols))
    r = c = 0
    for block in blocks:
        out[r : r + block.shape[0], c : c + block.shape[1]] = block
        r, c = r + block.shape[0], c + block.shape[1]
    return out


def _chunk_slices(z: int, floats_per_sample: int):
    size = max(CHUNK_MIN_ROWS, CHUNK_FLOATS // max(1, floats_per_sample))
    return [slice(start, min(start + size, z)) for start in range(0, z, size)]
