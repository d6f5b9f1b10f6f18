"""Backend ``vsh``: the complete Clebsch-Gordan tensor product through vector spherical harmonics.

Same function, weights and weight layout as ``cg`` (e3nn's per-path weights, every path of the
instructions, ``l1 + l2 + l3`` odd included), computed on an S2 grid as in ``gaunt_grid``
(Xie, Daigavane, Kotak, Smidt, arXiv 2602.21466):

* lift: every input block is sampled on the grid with the table of its degree ``[C * H, 2l + 1]``
  (``C`` signal components, ``H`` grid points), as scalar signals ``f = sum_m x_m Y_lm`` and, when
  the instructions have odd paths, as the tangent vector signals ``Phi f`` (input 1) and ``Psi f``
  (input 2) of :mod:`equitensor.so3.vsh`; the signals are rows ``(slot, channel, component)``;
* pointwise: at every grid point the products scalar x scalar (paths with ``l1 + l2 + l3`` even)
  and ``Phi f1 . Psi f2 = r_hat . (grad f1 x grad f2)`` (odd paths) of every slot pair are mixed
  into the output slots (rows ``(slot, channel)``) by the bilinear form ``M``: the weight of each
  path times e3nn's path coefficient divided by the generalised Gaunt factor
  (``so3.vsh.generalised_gaunt_factor``), built from the weights at each call;
* project: the grid sums times ``Y_lm`` and the quadrature weights give the output's columns.

Two executions of these three steps:

* on the CPU (outside functorch transforms), shared or per-sample weights: the kernels of
  :mod:`.vsh_fused` run all three per tile of samples in cache-resident scratch, over the nonzero
  entries of ``M`` only;
* otherwise (other devices, functorch transforms): lift and projection
  are one batched GEMM per block (:mod:`.block_matmul`) over points ordered ``(grid point,
  sample)``, the products dense GEMMs per block of ``M`` (:class:`GridProducts`,
  :func:`whole_batch_products`); eager batches run in chunks of :data:`CHUNK_BYTES`.

The slots of each side are ordered by the parity of their degree. A path's output degree has the
parity of ``l1 + l2`` (even paths) or ``l1 + l2 + 1`` (odd paths), so ``M`` is block sparse: its
dense form is up to four blocks per parity (:class:`ProductGroup`), each between one parity class
of input 1, one of input 2 and one of the output.

The grid is the smallest exact one with an even ``res_alpha``; every product the backend projects
is even under inversion, so only one point per antipodal pair is evaluated, with twice the weight
(``so3.vsh.hemisphere_tables``). The grid integrates every product exactly, so the result equals
``cg`` up to round-off.

Channels: one connection mode per product. Modes that keep a channel index through the product
(``uvu``: u, ``uvv``: v, ``uuw``/``uuu``: u) batch over it, and then every block in that role
needs the same multiplicity; ``uvw`` mixes all channels in ``M``.

Options:
    resolution: ``(res_beta, res_alpha)`` or ``None`` (default) for the smallest exact grid with
        an even ``res_alpha``, ``so3.vsh.antipodal_resolution(max l1 + l2 + l3)``; an odd
        ``res_alpha`` evaluates every point; a grid too coarse raises ``ValueError``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ... import so3
from ...so3 import vsh as so3_vsh
from .base import TensorProductBackend, instruction_paths
from .block_matmul import RowBlock, block_matmul
from . import vsh_fused

#: per mode, whether the channel of (input 1, input 2, output) is a batch index of the product
#: (kept through it) rather than a slot of the bilinear form.
BATCHED_ROLES = {
    "uvw": (False, False, False),
    "uvu": (True, False, True),
    "uvv": (False, True, True),
    "uuw": (True, True, False),
    "uuu": (True, True, True),
}
PARITIES = ("even", "odd")
#: the signal kinds of (input 1, input 2) whose pointwise product realises each path parity
SIGNAL_KINDS = {"even": ("scalar", "scalar"), "odd": ("phi", "psi")}
COMPONENTS = {"scalar": 1, "phi": 2, "psi": 2}


class ProductGroup(NamedTuple):
    """A dense block of the bilinear form: slots ``[a0, a1)`` of input 1 times ``[b0, b1)`` of
    input 2 into ``[o0, o1)`` of the output (pair index ``p = (a - a0) * (b1 - b0) + b - b0``)."""

    a0: int
    a1: int
    b0: int
    b1: int
    o0: int
    o1: int

    @property
    def pairs(self) -> int:
        return (self.a1 - self.a0) * (self.b1 - self.b0)

    @property
    def outputs(self) -> int:
        return self.o1 - self.o0


class LiftPlan(NamedTuple):
    """The lift of one input: :func:`.block_matmul` blocks, the signal rows they fill
    (``slots * slot channels * C * H``) and the degree of each table ``lift_{side}_{l}``."""

    blocks: tuple[RowBlock, ...]
    rows: int
    degrees: tuple[int, ...]


#: The unfused execution of :meth:`VSHBackend.forward` runs eager batches in chunks of samples
#: whose largest signal tensor holds at most this many bytes. Below glibc's largest mmap threshold
#: (32 MiB), the memory a chunk frees is reused from the heap by the next one instead of going back
#: to the OS and being page-faulted in again (for a whole batch of 10^4 at L = 8 that cost about as
#: much as the arithmetic), and the whole batch's signals never exist at once.
CHUNK_BYTES = 16 << 20


class VSHBackend(TensorProductBackend):
    """Clebsch-Gordan tensor product by scalar and vector signal products on an exact S2 grid."""

    backend_name = "vsh"
    parameterization = "per_path"
    supported_modes = tuple(BATCHED_ROLES)
    realises_odd_paths = True
    exact = True

    def __init__(self, descriptor, resolution: tuple[int, int] | None = None):
        super().__init__(descriptor)
        d = descriptor
        self.paths = instruction_paths(d)
        self.weight_numel = d.weight_numel
        self._dim_out = d.irreps_out.dim  # forward reads plain ints (torch.compile guards on them)
        modes = {ins.mode for ins in d.instructions}
        if len(modes) > 1:
            raise ValueError(f"backend 'vsh' runs one connection mode per product, got {sorted(modes)}")
        self.mode = modes.pop() if modes else "uvw"
        if self.mode not in BATCHED_ROLES:
            raise ValueError(f"backend 'vsh' does not support mode {self.mode!r}; supported: {self.supported_modes}")
        self.batched = BATCHED_ROLES[self.mode]
        self.channels = self._batch_channels()
        self._assign_slots()
        self.parities = tuple(
            p for p in PARITIES if any(self._parity(ins) == p for ins in d.instructions)
        )
        self._build_grid(resolution)
        self._build_bilinear_plan()
        self._build_fused_tables()

    # -- construction ---------------------------------------------------------------------------
    def _parity(self, ins) -> str:
        l1, l2, l3 = (ir.l for ir in self.descriptor.path_irreps(ins))
        return "odd" if (l1 + l2 + l3) % 2 else "even"

    def _path_name(self, ins) -> str:
        ir1, ir2, iro = self.descriptor.path_irreps(ins)
        return f"{ir1} x {ir2} -> {iro} (blocks {ins.i_in1}, {ins.i_in2} -> {ins.i_out})"

    def _irreps(self, side: int):
        d = self.descriptor
        return (d.irreps_in1, d.irreps_in2, d.irreps_out)[side]

    def _batch_channels(self) -> int:
        """The common multiplicity of the blocks whose channel is a batch index (1 for ``uvw``)."""
        channels = None
        for ins in self.descriptor.instructions:
            blocks = (ins.i_in1, ins.i_in2, ins.i_out)
            for side in range(3):
                if not self.batched[side]:
                    continue
                mul = self._irreps(side)[blocks[side]].mul
                if channels is None:
                    channels = mul
                elif mul != channels:
                    raise ValueError(
                        f"backend 'vsh' batches mode {self.mode!r} over channels, so all blocks in that role need one "
                        f"multiplicity: path {self._path_name(ins)} has {mul}, another path {channels}; use 'cg' "
                        "or equal multiplicities"
                    )
        return channels or 1

    def _assign_slots(self) -> None:
        """Slot offsets of the used blocks per side, ordered by degree parity (even class first).

        ``slots[side][block]`` is the first slot of the block (one slot per block when the side's
        channel is batched, one per channel otherwise); ``classes[side][c]`` the slot range of
        parity class ``c``; ``slot_degrees[side]`` the degree of every slot.
        """
        field = ("i_in1", "i_in2", "i_out")
        self.slots, self.slot_counts, self.classes, self.slot_degrees = [], [], [], []
        for side in range(3):
            irreps = self._irreps(side)
            used = sorted({getattr(ins, field[side]) for ins in self.descriptor.instructions})
            used.sort(key=lambda block: (irreps[block].ir.l % 2, block))
            offsets, degrees, bounds = {}, [], [0, 0, 0]
            for block in used:
                offsets[block] = len(degrees)
                width = 1 if self.batched[side] else irreps[block].mul
                degrees += [irreps[block].ir.l] * width
                bounds[1 + irreps[block].ir.l % 2 :] = [len(degrees)] * (2 - irreps[block].ir.l % 2)
            self.slots.append(offsets)
            self.slot_counts.append(len(degrees))
            self.classes.append(((bounds[0], bounds[1]), (bounds[1], bounds[2])))
            self.slot_degrees.append(degrees)

    def _build_grid(self, resolution) -> None:
        d = self.descriptor
        degree = max((sum(ir.l for ir in d.path_irreps(ins)) for ins in d.instructions), default=0)
        if resolution is None:
            res_beta, res_alpha = so3_vsh.antipodal_resolution(degree)
        else:
            if len(tuple(resolution)) != 2:
                raise ValueError(f"resolution must be (res_beta, res_alpha), got {resolution!r}")
            res_beta, res_alpha = (int(r) for r in resolution)
            so3.s2grid.check_resolution(res_beta, res_alpha, degree)
        self.resolution = (res_beta, res_alpha)
        lmax = max((ir.l for side in range(3) for _, ir in self._irreps(side)), default=0)
        tables = so3_vsh.hemisphere_tables(lmax, res_beta, res_alpha)
        self.points = tables["scalar"].shape[0]
        #: components of each parity's signals within the lifted ``[K, slots, C, N]`` (both sides)
        self.components, start = {}, 0
        for parity in self.parities:
            self.components[parity] = (start, start + COMPONENTS[SIGNAL_KINDS[parity][0]])
            start = self.components[parity][1]
        self.signal_components = start
        self.lift_plans = [self._build_lift(side, tables) for side in (0, 1)]
        self._build_projection(tables["project"])

    def _slot_channels(self, side: int) -> int:
        """The channels each slot of ``side`` holds in the signal rows (``K`` if batched, else 1)."""
        return self.channels if self.batched[side] else 1

    def _build_lift(self, side: int, tables) -> LiftPlan:
        """The lift of input ``side`` as :func:`.block_matmul` blocks, one per used input block.

        Its tables ``lift_{side}_{l}`` ``[C * H, 2l + 1]`` stack the signal kinds of every parity
        (:attr:`components`) for degree ``l``; the signal rows are ``(slot, channel, component, point)``
        with ``slot_channels`` channels per slot (a slot-major layout, so that every block of the
        input writes one contiguous range).
        """
        irreps = self._irreps(side)
        kinds = [tables[SIGNAL_KINDS[parity][side]].reshape(-1, self.points, tables["scalar"].shape[-1]) for parity in self.parities]
        rows_per_slot = self._slot_channels(side) * self.signal_components * self.points
        degrees, blocks = [], []
        for block, ((mul, ir), block_slice) in enumerate(zip(irreps, irreps.slices())):
            if block not in self.slots[side]:
                continue
            if ir.l not in degrees:
                columns = slice(ir.l**2, (ir.l + 1) ** 2)
                self.add_table(f"lift_{side}_{ir.l}", np.concatenate([kind[:, :, columns].reshape(-1, ir.dim) for kind in kinds]))
                degrees.append(ir.l)
            rows_out = self.signal_components * self.points
            blocks.append(RowBlock(block_slice.start, self.slots[side][block] * rows_per_slot, mul, ir.dim, rows_out, degrees.index(ir.l)))
        return LiftPlan(tuple(blocks), self.slot_counts[side] * rows_per_slot, tuple(degrees))

    def _build_projection(self, project: np.ndarray) -> None:
        """The projection of the grid sums ``[O * K_out * H, Z]`` (rows ``(output slot, channel,
        point)``) onto the output coefficients ``[irreps_out.dim, Z]`` as :func:`.block_matmul`
        blocks, one per used output block, with tables ``project_{l}`` ``[2l + 1, H]`` (``Y_lm``
        times the quadrature weights); the rows of unused output blocks are zero."""
        irreps = self.descriptor.irreps_out
        rows_per_slot = self._slot_channels(2) * self.points
        degrees, blocks = [], []
        for block, ((mul, ir), block_slice) in enumerate(zip(irreps, irreps.slices())):
            if block not in self.slots[2]:
                continue
            if ir.l not in degrees:
                self.add_table(f"project_{ir.l}", project[:, ir.l**2 : (ir.l + 1) ** 2].T)
                degrees.append(ir.l)
            blocks.append(RowBlock(self.slots[2][block] * rows_per_slot, block_slice.start, mul, self.points, ir.dim, degrees.index(ir.l)))
        self.projection_degrees = tuple(degrees)
        self.projection_blocks = tuple(blocks)

    def _build_bilinear_plan(self) -> None:
        """The dense blocks of ``M`` per parity and where each weight lands in them.

        Per parity ``p`` and block ``j``: ``target_{p}_{j}`` (flat index into ``M_j [K, P_j, O_j]``),
        ``source_{p}_{j}`` (index into the weights; ``weight_numel`` = the constant 1 of an
        unweighted path) and the constant ``scale_{p}_{j}`` = e3nn's path coefficient / generalised
        Gaunt factor.
        """
        d = self.descriptor
        self.groups: dict[str, list[ProductGroup]] = {}
        entries: dict[tuple[str, ProductGroup], tuple[list, list, list]] = {}
        sparse = []  # per path: parity, k, a, b, o (slots), weight index, scale
        source_of = lambda ins, weights, k, flat: (  # noqa: E731
            flat + weights.start if weights is not None else np.full(k.shape, self.weight_numel)
        )
        for ins, weights in zip(d.instructions, d.weight_slices()):
            l1, l2, l3 = (ir.l for ir in d.path_irreps(ins))
            try:
                factor = so3_vsh.generalised_gaunt_factor(l1, l2, l3)
            except ValueError as error:
                raise ValueError(f"backend 'vsh' cannot realise path {self._path_name(ins)}: {error}") from None
            parity = self._parity(ins)
            bit = 1 if parity == "odd" else 0
            (a0, a1), (b0, b1), (o0, o1) = (self.classes[0][l1 % 2], self.classes[1][l2 % 2], self.classes[2][(l1 + l2 + bit) % 2])
            group = ProductGroup(a0, a1, b0, b1, o0, o1)
            if (parity, group) not in entries:
                entries[parity, group] = ([], [], [])
                self.groups.setdefault(parity, []).append(group)
            muls = (d.irreps_in1[ins.i_in1].mul, d.irreps_in2[ins.i_in2].mul, d.irreps_out[ins.i_out].mul)
            k, a, b, o, flat_weight = self._path_entries(ins, muls)
            a = a + self.slots[0][ins.i_in1] - a0
            b = b + self.slots[1][ins.i_in2] - b0
            o = o + self.slots[2][ins.i_out] - o0
            sparse.append((parity, k, a + a0, b + b0, o + o0, source_of(ins, weights, k, flat_weight), ins.coefficient / factor))
            target, source, scale = entries[parity, group]
            target.append((k * group.pairs + a * (b1 - b0) + b) * group.outputs + o)
            source.append(source_of(ins, weights, k, flat_weight))
            scale.append(np.full(k.shape, ins.coefficient / factor))
        for parity, groups in self.groups.items():
            for j, group in enumerate(groups):
                target, source, scale = entries[parity, group]
                self.register_buffer(f"target_{parity}_{j}", torch.as_tensor(np.concatenate(target)), persistent=False)
                self.register_buffer(f"source_{parity}_{j}", torch.as_tensor(np.concatenate(source)), persistent=False)
                self.add_table(f"scale_{parity}_{j}", np.concatenate(scale))
        self._build_sparse_plan(sparse)

    def _build_sparse_plan(self, paths) -> None:
        """The entry tables of :mod:`.vsh_fused` from the paths' ``(parity, k, a, b, o, source,
        scale)`` (arrays over the path's weights): ``sparse_tables`` (see that module), the
        weight index ``sparse_source [E]`` and constant ``sparse_scale [E]`` of each entry."""
        columns = [[], [], [], [], [], [], []]  # r1, r2, components, row, source, scale, order key
        k1, k2, k_out = (self._slot_channels(side) for side in range(3))
        for parity, k, a, b, o, source, scale in paths:
            c0, c1 = self.components[parity]
            # slot-major rows, as the lift writes them and the projection reads them
            r1 = (a * k1 + k % k1) * self.signal_components + c0
            r2 = (b * k2 + k % k2) * self.signal_components + c0
            row = o * k_out + k % k_out
            for column, values in zip(columns, (r1, r2, np.full(k.shape, c1 - c0), row, source, np.full(k.shape, scale))):
                column.append(np.asarray(values))
        r1, r2, components, row, source, scale = (np.concatenate(c) if c else np.zeros(0, np.int64) for c in columns[:6])
        # entries sorted by pair, so each pair's product is formed once per tile
        pairs, pair_of = np.unique(np.stack([r1, r2, components], axis=1), axis=0, return_inverse=True)
        pair_of = pair_of.reshape(-1)
        order = np.argsort(pair_of, kind="stable")
        start = np.concatenate([[0], np.cumsum(np.bincount(pair_of, minlength=len(pairs)))])
        tables = (pairs[:, 0], pairs[:, 1], pairs[:, 2], start, row[order])
        self.sparse_tables = [torch.as_tensor(np.ascontiguousarray(t), dtype=torch.int64) for t in tables]
        self.register_buffer("sparse_source", torch.as_tensor(source[order], dtype=torch.int64), persistent=False)
        self.add_table("sparse_scale", scale[order])

    def _build_fused_tables(self) -> None:
        """The tables of :mod:`.vsh_fused` after :attr:`sparse_tables`: per input column (lift) and
        per output column (projection) its signal row and table offset; the float tables as
        ``fused_lift_1``, ``fused_lift_2``, ``fused_project`` (flat, ``[dim, C, H]`` / ``[dim, H]``
        per degree)."""
        h, c = self.points, self.signal_components
        integers = []
        for side, plan in enumerate(self.lift_plans):
            flat, offsets, columns = [], {}, [[], [], [], []]  # in, row, comp, base
            for b in plan.blocks:
                l = plan.degrees[b.table]
                if l not in offsets:
                    offsets[l] = sum(t.size for t in flat)
                    flat.append(self.master(f"lift_{side}_{l}").reshape(c, h, b.rows_in).transpose(2, 0, 1).ravel())
                for i in range(b.count):
                    for m in range(b.rows_in):
                        values = (b.in_start + i * b.rows_in + m, (b.out_start + i * b.rows_out) // h, c, offsets[l] + m * c * h)
                        for column, value in zip(columns, values):
                            column.append(value)
            integers += columns
            self.add_table(f"fused_lift_{side + 1}", np.concatenate(flat) if flat else np.zeros(1))
        flat, offsets, columns = [], {}, [[], [], []]  # row, out, base
        for b in self.projection_blocks:
            l = self.projection_degrees[b.table]
            if l not in offsets:
                offsets[l] = sum(t.size for t in flat)
                flat.append(self.master(f"project_{l}").ravel())
            for i in range(b.count):
                for m in range(b.rows_out):
                    values = ((b.in_start + i * b.rows_in) // h, b.out_start + i * b.rows_out + m, offsets[l] + m * h)
                    for column, value in zip(columns, values):
                        column.append(value)
        integers += columns
        self.add_table("fused_project", np.concatenate(flat) if flat else np.zeros(1))
        rows = (self.lift_plans[0].rows // h, self.lift_plans[1].rows // h, self._slot_channels(2) * self.slot_counts[2])
        # backward scratch: both signals, both their gradients and the grid sums' gradient
        tile = vsh_fused.tile_samples(2 * rows[0] + 2 * rows[1] + rows[2], h)
        integers.append(rows + (h, tile))
        self.fused_integer_tables = [torch.as_tensor(np.asarray(t, dtype=np.int64)) for t in integers]

    def fused_tables(self, like: torch.Tensor) -> list[torch.Tensor]:
        """The tables of :mod:`.vsh_fused` (order :data:`.vsh_fused.TABLES`) in ``like``'s dtype."""
        floats = [self.table(name, like) for name in ("fused_lift_1", "fused_lift_2", "fused_project")]
        return [*self.sparse_tables, *self.fused_integer_tables, *floats]

    def _path_entries(self, ins, muls):
        """Per weight of the path (e3nn's row-major block): batch ``k``, slots ``a, b, o`` within the
        blocks and the weight's index within the block (all ``int64`` arrays of one shape)."""
        m1, m2, mo = muls
        full = {"uvw": (m1, m2, mo), "uvu": (m1, m2), "uvv": (m1, m2), "uuw": (m1, mo), "uuu": (m1,)}[self.mode]
        grids = np.indices(full).reshape(len(full), -1)
        flat = np.ravel_multi_index(tuple(grids), full)
        zero = np.zeros_like(flat)
        if self.mode == "uvw":
            u, v, w = grids
            return zero, u, v, w, flat
        if self.mode == "uvu":
            u, v = grids
            return u, zero, v, zero, flat
        if self.mode == "uvv":
            u, v = grids
            return v, u, zero, zero, flat
        if self.mode == "uuw":
            u, w = grids
            return u, zero, zero, w, flat
        (u,) = grids
        return u, zero, zero, zero, flat

    # -- execution ------------------------------------------------------------------------------
    def bilinear_forms(self, weight: torch.Tensor | None, like: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """The dense blocks ``M_j [Zw, K, P_j, O_j]`` of the form per parity (``Zw`` = 1 for shared weights)."""
        if weight is None:
            extended = like.new_ones(1, 1)
        else:
            weight = weight.unsqueeze(0) if weight.ndim == 1 else weight
            extended = torch.cat([weight, weight.new_ones(weight.shape[0], 1)], dim=1)
        forms = {}
        for parity, groups in self.groups.items():
            forms[parity] = []
            for j, group in enumerate(groups):
                values = extended.index_select(1, getattr(self, f"source_{parity}_{j}"))
                values = values * self.table(f"scale_{parity}_{j}", like)
                size = self.channels * group.pairs * group.outputs
                form = values.new_zeros(values.shape[0], size).index_add(1, getattr(self, f"target_{parity}_{j}"), values)
                forms[parity].append(form.view(values.shape[0], self.channels, group.pairs, group.outputs))
        return forms

    def sparse_values(self, weight: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """The nonzero values of the bilinear form (order of ``sparse_tables``): ``[1, E]`` for
        shared weights (``None``, ``[numel]`` or ``[1, numel]``), ``[Z, E]`` for per-sample ones."""
        if weight is None:
            extended = like.new_ones(1, self.weight_numel + 1)
        else:
            weight = weight.reshape(1, -1) if weight.ndim == 1 else weight
            extended = torch.cat([weight, weight.new_ones(weight.shape[0], 1)], dim=1)
        return extended.index_select(1, self.sparse_source) * self.table("sparse_scale", like)

    def lift(self, x: torch.Tensor, side: int) -> torch.Tensor:
        """Signals of every slot of input ``side`` (``x [Z, irreps.dim]``) on the grid: ``[R, H * Z]``.

        Rows ``(slot, channel, component)`` (:meth:`signals_by_channel` views them as ``[K or 1,
        slots, C, H * Z]``); the components are those of every parity's signal kind
        (:attr:`components`): ``"scalar"`` (1) for even paths, ``"phi"`` (input 1) or ``"psi"``
        (input 2) (2) for odd ones; points are ordered ``(grid point, sample)``.
        """
        plan = self.lift_plans[side]
        tables = tuple(self.table(f"lift_{side}_{l}", x) for l in plan.degrees)
        signals = block_matmul(x.t(), plan.blocks, plan.rows, tables)  # [R * H, Z]
        return signals.view(plan.rows // self.points, self.points * x.shape[0])

    def signals_by_channel(self, signals: torch.Tensor, side: int) -> torch.Tensor:
        """:meth:`lift`'s ``[R, N]`` as the (strided) view ``[K or 1, slots, C, N]``."""
        shape = (self.slot_counts[side], self._slot_channels(side), self.signal_components, signals.shape[-1])
        return signals.view(shape).transpose(0, 1)

    def project(self, grid_sums: torch.Tensor, z: int) -> torch.Tensor:
        """``grid_sums [O * K_out, H * Z]`` (rows ``(output slot, channel)``, ``K_out`` = ``K`` when
        the output channel is batched, else 1) to the output ``[Z, irreps_out.dim]`` (mul_ir layout).

        One batched GEMM ``[2l + 1, H] @ [H, Z]`` per output block reads the grid sums in place and
        writes the output's columns (its backward writes the sums' gradient in the same layout).
        """
        tables = tuple(self.table(f"project_{l}", grid_sums) for l in self.projection_degrees)
        rows = grid_sums.shape[0] * self.points
        coefficients = block_matmul(grid_sums.reshape(rows, z), self.projection_blocks, self._dim_out, tables)
        return coefficients.t().contiguous()

    def uses_fused_kernel(self, weight: torch.Tensor | None, like: torch.Tensor) -> bool:
        """Whether :meth:`forward` runs the fused CPU kernels of :mod:`.vsh_fused` (shared or
        per-sample weights): on the CPU outside functorch transforms (which need plain ops)."""
        return (
            bool(self.parities)
            and like.device.type == "cpu"
            and not torch._C._are_functorch_transforms_active()
        )

    @property
    def signal_rows(self) -> int:
        """Values per sample of the largest signal tensor: either lift or the grid sums."""
        return max(self.lift_plans[0].rows, self.lift_plans[1].rows, self._slot_channels(2) * self.slot_counts[2] * self.points)

    def chunk_samples(self, itemsize: int) -> int:
        """Samples per chunk of :meth:`forward` (its largest signal tensor holds at most :data:`CHUNK_BYTES`)."""
        return max(1, CHUNK_BYTES // (self.signal_rows * itemsize))

    def forward(self, x1, x2, weight):
        z = x1.shape[0]
        if not self.parities:
            return x1.new_zeros(z, self._dim_out)
        if self.uses_fused_kernel(weight, x1):
            return vsh_fused.VSH_FUSED_OPS.forward(x1, x2, self.sparse_values(weight, x1), z, self._dim_out, self.fused_tables(x1))
        chunk = self.chunk_samples(x1.element_size())
        if z <= chunk or torch.compiler.is_compiling():  # compiled graphs keep the batch symbolic
            return self._forward_samples(x1, x2, weight)
        per_sample = weight is not None and weight.ndim == 2 and weight.shape[0] == z and z != 1
        outputs = [
            self._forward_samples(x1[i : i + chunk], x2[i : i + chunk], weight[i : i + chunk] if per_sample else weight)
            for i in range(0, z, chunk)
        ]
        return torch.cat(outputs)

    def _forward_samples(self, x1, x2, weight):
        """The product of one chunk of samples (every sample when it fits :data:`CHUNK_BYTES`)."""
        z = x1.shape[0]
        f1, f2 = self.lift(x1, 0), self.lift(x2, 1)
        forms = self.bilinear_forms(weight, x1)
        widths = [c1 - c0 for c0, c1 in self.components.values()]
        # split, not slices: the backward of each slice would fill a zero copy of all signals
        f1s = self.signals_by_channel(f1, 0).split(widths, dim=2)
        f2s = self.signals_by_channel(f2, 1).split(widths, dim=2)
        grid_sums = None
        for parity, f1p, f2p in zip(self.parities, f1s, f2s):
            sums = grid_products(f1p, f2p, self.groups[parity], self.slot_counts[2], forms[parity], z)
            grid_sums = sums if grid_sums is None else grid_sums + sums
        if not self.batched[2]:  # uuw sums its batch channel u into every output channel w
            grid_sums = grid_sums.sum(0, keepdim=True)
        channels, outputs, points = grid_sums.shape
        return self.project(grid_sums.transpose(0, 1).reshape(outputs * channels, points), z)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode}, resolution={self.resolution}, points={self.points}"


def grid_products(f1, f2, groups, outputs: int, forms, z: int) -> torch.Tensor:
    """``out[k, o, n] = sum_(a, b) M[k, a, b, o] sum_c f1[k, a, c, n] f2[k, b, c, n]`` per dense block.

    ``f1 [K1, A, C, N]``, ``f2 [K2, B, C, N]`` (``K1``/``K2`` 1 or ``K``), ``forms`` the blocks
    ``[Zw, Kw, P_j, O_j]`` of :class:`ProductGroup` ``groups``, ``N = H * Z`` points ordered
    ``(grid point, sample)`` -> ``[K, outputs, N]``. Shared forms run the chunked
    :class:`GridProducts`; per-sample forms run whole-batch einsums.
    """
    if all(form.shape[0] == 1 for form in forms):
        return GridProducts.apply(f1, f2, tuple(groups), outputs, *(form[0] for form in forms))
    return whole_batch_products(f1, f2, groups, outputs, forms, z)


def whole_batch_products(f1, f2, groups, outputs: int, forms, z: int) -> torch.Tensor:
    """:func:`grid_products` with differentiable whole-batch ops (any ``Zw``; twice differentiable)."""
    k = max(f1.shape[0], f2.shape[0], *(form.shape[1] for form in forms))
    n = f1.shape[-1]
    out = None
    for group, form in zip(groups, forms):
        left = f1[:, group.a0 : group.a1].expand(k, -1, -1, -1)
        right = f2[:, group.b0 : group.b1].expand(k, -1, -1, -1)
        pairs = torch.einsum("kacn,kbcn->kabn", left, right).reshape(k, group.pairs, n)
        form = form.expand(form.shape[0], k, -1, -1)
        if form.shape[0] == 1:
            term = torch.einsum("kpn,kpo->kon", pairs, form[0])
        else:
            term = torch.einsum("kpgz,zkpo->kogz", pairs.view(k, group.pairs, n // max(z, 1), z), form).reshape(k, form.shape[-1], n)
        term = F.pad(term, (0, 0, group.o0, outputs - group.o1))
        out = term if out is None else out + term
    return out


#: columns of :class:`GridProducts` per chunk are chosen so that one chunk's pair products hold
#: about this many floats (they stay in cache between the product and the GEMM).
CHUNK_FLOATS = 1 << 20


class GridProducts(torch.autograd.Function):
    """:func:`grid_products` with shared forms ``[Kw, P_j, O_j]``, over chunks of points.

    The pair products ``[P_j, chunk]`` exist only per chunk, forward and backward; a backward that
    builds a graph differentiates :func:`whole_batch_products`, so higher derivatives work.
    """

    @staticmethod
    def forward(ctx, f1, f2, groups, outputs, *forms):
        k_out = max(f1.shape[0], f2.shape[0], *(form.shape[0] for form in forms))
        n = f1.shape[-1]
        out = f1.new_zeros(k_out, outputs, n)
        for k in range(k_out):
            for cols in _chunks(n, max(group.pairs for group in groups)):
                for group, form in zip(groups, forms):
                    pairs = _pair_products(f1, f2, group, k, cols)
                    out[k, group.o0 : group.o1, cols].addmm_(form[k % form.shape[0]].T, pairs)
        ctx.groups, ctx.outputs = groups, outputs
        ctx.save_for_backward(f1, f2, *forms)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        f1, f2, *forms = ctx.saved_tensors
        groups = ctx.groups
        if torch.is_grad_enabled():  # create_graph
            return _differentiable_backward(f1, f2, groups, ctx.outputs, forms, grad_out, ctx.needs_input_grad)
        need_f1, need_f2 = ctx.needs_input_grad[:2]
        grad_f1 = torch.zeros_like(f1) if need_f1 else None
        grad_f2 = torch.zeros_like(f2) if need_f2 else None
        grad_forms = [torch.zeros_like(form) if need else None for form, need in zip(forms, ctx.needs_input_grad[4:])]
        for k in range(grad_out.shape[0]):
            for cols in _chunks(grad_out.shape[-1], max(group.pairs for group in groups)):
                for group, form, grad_form in zip(groups, forms, grad_forms):
                    grad_here = grad_out[k, group.o0 : group.o1, cols]  # [O_j, n]
                    if grad_form is not None:
                        grad_form[k % form.shape[0]].addmm_(_pair_products(f1, f2, group, k, cols), grad_here.T)
                    if need_f1 or need_f2:
                        grad_pairs = (form[k % form.shape[0]] @ grad_here).view(group.a1 - group.a0, group.b1 - group.b0, -1)
                        _pair_products_backward(f1, f2, grad_f1, grad_f2, group, k, cols, grad_pairs)
        return grad_f1, grad_f2, None, None, *grad_forms


def _pair_products(f1, f2, group: ProductGroup, k: int, cols: slice) -> torch.Tensor:
    """``[P_j, n]``: ``sum_c f1[a, c] f2[b, c]`` of every slot pair of the block at points ``cols``."""
    left = f1[k % f1.shape[0], group.a0 : group.a1, :, cols]  # [A_j, C, n]
    right = f2[k % f2.shape[0], group.b0 : group.b1, :, cols]
    pairs = left[:, None, 0] * right[None, :, 0]
    for c in range(1, left.shape[1]):
        pairs.addcmul_(left[:, None, c], right[None, :, c])
    return pairs.view(group.pairs, -1)


def _pair_products_backward(f1, f2, grad_f1, grad_f2, group, k, cols, grad_pairs) -> None:
    """Accumulate ``grad_pairs [A_j, B_j, n]`` into the gradients of the signals (in place)."""
    left = f1[k % f1.shape[0], group.a0 : group.a1, :, cols]
    right = f2[k % f2.shape[0], group.b0 : group.b1, :, cols]
    for c in range(left.shape[1]):
        if grad_f1 is not None:
            grad_f1[k % f1.shape[0], group.a0 : group.a1, c, cols] += (grad_pairs * right[None, :, c]).sum(1)
        if grad_f2 is not None:
            grad_f2[k % f2.shape[0], group.b0 : group.b1, c, cols] += (grad_pairs * left[:, None, c]).sum(0)


def _differentiable_backward(f1, f2, groups, outputs, forms, grad_out, needs_input_grad):
    with torch.enable_grad():
        out = whole_batch_products(f1, f2, groups, outputs, [form.unsqueeze(0) for form in forms], 1)
        inputs = (f1, f2, *forms)
        wanted = [i for i, t in enumerate(inputs) if t.requires_grad and needs_input_grad[i if i < 2 else i + 2]]
        grads = torch.autograd.grad(out, [inputs[i] for i in wanted], grad_out, create_graph=True, allow_unused=True)
    result = [None] * len(inputs)
    for i, grad in zip(wanted, grads):
        result[i] = grad
    return result[0], result[1], None, None, *result[2:]


def _chunks(columns: int, rows: int) -> list[slice]:
    size = max(1, CHUNK_FLOATS // max(1, rows))
    return [slice(start, min(start + size, columns)) for start in range(0, columns, size)]
