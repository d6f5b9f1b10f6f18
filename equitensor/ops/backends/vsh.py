"""Backend ``vsh``: the complete Clebsch-Gordan tensor product through vector spherical harmonics.

Same function, weights and weight layout as ``cg`` (e3nn's per-path weights, every path of the
instructions, ``l1 + l2 + l3`` odd included), computed on an S2 grid as in ``gaunt_grid``
(Xie, Daigavane, Kotak, Smidt, arXiv 2602.21466):

* every input block is lifted, per channel, to a scalar signal ``f = sum_m x_m Y_lm`` and, when
  the instructions have odd paths, to the tangent vector signals ``Phi f`` (input 1) and
  ``Psi f`` (input 2) of :mod:`equitensor.so3.vsh`;
* at every grid point the products scalar x scalar (paths with ``l1 + l2 + l3`` even) and
  ``Phi f1 . Psi f2 = r_hat . (grad f1 x grad f2)`` (odd paths) are summed over the paths into
  each output block with the weight of the path divided by its generalised Gaunt factor
  (``so3.vsh.generalised_gaunt_factor``), times e3nn's path coefficient;
* the sums are projected back on ``Y_l3`` with the quadrature weights.

The grid integrates every product exactly, so the result equals ``cg`` up to round-off. The
per-point sums are GEMMs: a bilinear form ``f1^T M_l3 f2`` per output block, with ``M`` built
from the weights (shared or per sample) at each call.

Channels: one connection mode per product. Modes that keep a channel index through the product
(``uvu``: u, ``uvv``: v, ``uuw``/``uuu``: u) batch over it, and then every block in that role
needs the same multiplicity; ``uvw`` mixes all channels in ``M``.

Options:
    resolution: ``(res_beta, res_alpha)`` or ``None`` (default) for the smallest exact grid,
        ``exact_resolution(max l1 + l2 + l3)``; a grid too coarse raises ``ValueError``.
"""

from __future__ import annotations

import numpy as np
import torch

from ... import so3
from ...so3 import vsh as so3_vsh
from .base import TensorProductBackend, instruction_paths

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
        modes = {ins.mode for ins in d.instructions}
        if len(modes) > 1:
            raise ValueError(f"backend 'vsh' runs one connection mode per product, got {sorted(modes)}")
        self.mode = modes.pop() if modes else "uvw"
        if self.mode not in BATCHED_ROLES:
            raise ValueError(f"backend 'vsh' does not support mode {self.mode!r}; supported: {self.supported_modes}")
        self.batched = BATCHED_ROLES[self.mode]
        self.channels = self._batch_channels()
        irreps = (d.irreps_in1, d.irreps_in2, d.irreps_out)
        # slot offsets of every block used by an instruction, per side
        self.slots: list[dict[int, int]] = []
        self.slot_counts: list[int] = []
        for side, field in enumerate(("i_in1", "i_in2", "i_out")):
            used = sorted({getattr(ins, field) for ins in d.instructions})
            offsets, start = {}, 0
            for block in used:
                offsets[block] = start
                start += 1 if self.batched[side] else irreps[side][block].mul
            self.slots.append(offsets)
            self.slot_counts.append(start)
        self.parities = tuple(
            p for p in PARITIES if any(self._parity(ins) == p for ins in d.instructions)
        )
        self._build_grid(resolution)
        self._build_bilinear_plan()

    # -- construction ---------------------------------------------------------------------------
    def _parity(self, ins) -> str:
        l1, l2, l3 = (ir.l for ir in self.descriptor.path_irreps(ins))
        return "odd" if (l1 + l2 + l3) % 2 else "even"

    def _path_name(self, ins) -> str:
        ir1, ir2, iro = self.descriptor.path_irreps(ins)
        return f"{ir1} x {ir2} -> {iro} (blocks {ins.i_in1}, {ins.i_in2} -> {ins.i_out})"

    def _batch_channels(self) -> int:
        """The common multiplicity of the blocks whose channel is a batch index (1 for ``uvw``)."""
        d = self.descriptor
        irreps = (d.irreps_in1, d.irreps_in2, d.irreps_out)
        channels = None
        for ins in d.instructions:
            blocks = (ins.i_in1, ins.i_in2, ins.i_out)
            for side in range(3):
                if not self.batched[side]:
                    continue
                mul = irreps[side][blocks[side]].mul
                if channels is None:
                    channels = mul
                elif mul != channels:
                    raise ValueError(
                        f"backend 'vsh' batches mode {self.mode!r} over channels, so all blocks in that role need one "
                        f"multiplicity: path {self._path_name(ins)} has {mul}, another path {channels}; use 'cg' "
                        "or equal multiplicities"
                    )
        return channels or 1

    def _build_grid(self, resolution) -> None:
        d = self.descriptor
        degrees = [sum(ir.l for ir in d.path_irreps(ins)) for ins in d.instructions]
        degree = max(degrees, default=0)
        if resolution is None:
            res_beta, res_alpha = so3.s2grid.exact_resolution(degree)
        else:
            if len(tuple(resolution)) != 2:
                raise ValueError(f"resolution must be (res_beta, res_alpha), got {resolution!r}")
            res_beta, res_alpha = (int(r) for r in resolution)
            so3.s2grid.check_resolution(res_beta, res_alpha, degree)
        self.resolution = (res_beta, res_alpha)
        lmax = max((ir.l for irreps in (d.irreps_in1, d.irreps_in2, d.irreps_out) for _, ir in irreps), default=0)
        values = so3.s2grid.harmonics_on_grid(lmax, res_beta, res_alpha)  # [G, (lmax+1)^2]
        project = so3.s2grid.projection_on_grid(lmax, res_beta, res_alpha)
        psi, phi = so3_vsh.vector_harmonics_on_grid(lmax, res_beta, res_alpha)  # [2, G, (lmax+1)^2]
        for l in range(lmax + 1):
            cols = slice(l * l, (l + 1) ** 2)
            self.add_table(f"scalar_{l}", values[:, cols].T)  # [2l+1, G]
            self.add_table(f"project_{l}", project[:, cols])  # [G, 2l+1]
            # [2l+1, 2G]: the two tangent components side by side
            self.add_table(f"phi_{l}", np.concatenate([phi[0][:, cols], phi[1][:, cols]]).T)
            self.add_table(f"psi_{l}", np.concatenate([psi[0][:, cols], psi[1][:, cols]]).T)

    def _build_bilinear_plan(self) -> None:
        """Where each weight lands in the bilinear forms ``M [K, B, A * O]`` of each parity.

        Buffers per parity: ``target_{p}`` (flat index into ``M``), ``source_{p}`` (index into the
        weights, ``weight_numel`` = the constant 1 of an unweighted path) and the constant
        ``scale_{p}`` = e3nn's path coefficient / generalised Gaunt factor.
        """
        d = self.descriptor
        n_a, n_b, n_o = self.slot_counts
        per_parity = {p: ([], [], []) for p in self.parities}
        for ins, weights in zip(d.instructions, d.weight_slices()):
            l1, l2, l3 = (ir.l for ir in d.path_irreps(ins))
            try:
                factor = so3_vsh.generalised_gaunt_factor(l1, l2, l3)
            except ValueError as error:
                raise ValueError(f"backend 'vsh' cannot realise path {self._path_name(ins)}: {error}") from None
            muls = (d.irreps_in1[ins.i_in1].mul, d.irreps_in2[ins.i_in2].mul, d.irreps_out[ins.i_out].mul)
            k, a, b, o, flat_weight = self._path_entries(ins, muls)
            a, b, o = a + self.slots[0][ins.i_in1], b + self.slots[1][ins.i_in2], o + self.slots[2][ins.i_out]
            target, source, scale = per_parity[self._parity(ins)]
            target.append(((k * n_b + b) * n_a + a) * n_o + o)
            source.append(flat_weight + weights.start if weights is not None else np.full(k.shape, self.weight_numel))
            scale.append(np.full(k.shape, ins.coefficient / factor))
        for parity, (target, source, scale) in per_parity.items():
            target = np.concatenate(target)
            pairs = np.unique((target // n_o) % (n_a * n_b))  # b * A + a of every entry
            self.register_buffer(f"pair_a_{parity}", torch.as_tensor(pairs % n_a), persistent=False)
            self.register_buffer(f"pair_b_{parity}", torch.as_tensor(pairs // n_a), persistent=False)
            self.register_buffer(f"target_{parity}", torch.as_tensor(target), persistent=False)
            self.register_buffer(f"source_{parity}", torch.as_tensor(np.concatenate(source)), persistent=False)
            self.add_table(f"scale_{parity}", np.concatenate(scale))

    def _path_entries(self, ins, muls):
        """Per weight of the path (e3nn's row-major block): batch ``k``, slots ``a, b, o`` and the
        weight's index within the block (all ``int64`` arrays of one shape)."""
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
    def bilinear_forms(self, weight: torch.Tensor | None, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """``M_p [Zw, K, B, A * O]`` per parity ``p`` (``Zw`` = 1 for shared weights)."""
        if weight is None:
            extended = like.new_ones(1, 1)
        else:
            weight = weight.unsqueeze(0) if weight.ndim == 1 else weight
            extended = torch.cat([weight, weight.new_ones(weight.shape[0], 1)], dim=1)
        n_a, n_b, n_o = self.slot_counts
        forms = {}
        for parity in self.parities:
            values = extended.index_select(1, getattr(self, f"source_{parity}")) * self.table(f"scale_{parity}", like)
            size = self.channels * n_b * n_a * n_o
            forms[parity] = (
                values.new_zeros(values.shape[0], size)
                .index_add(1, getattr(self, f"target_{parity}"), values)
                .view(values.shape[0], self.channels, n_b, n_a * n_o)
            )
        return forms

    def lift(self, x: torch.Tensor, side: int, kind: str) -> torch.Tensor:
        """Signals of the used blocks of input ``side``: ``[Z, K or 1, C * G, slots]``.

        ``kind`` is ``"scalar"`` (``C = 1``), ``"phi"`` or ``"psi"`` (``C = 2``).
        """
        d = self.descriptor
        irreps = (d.irreps_in1, d.irreps_in2)[side]
        slices = irreps.slices()
        z = x.shape[0]
        signals = []
        for block in self.slots[side]:
            mul, ir = irreps[block]
            table = self.table(f"{kind}_{ir.l}", x)
            signals.append(x[:, slices[block]].reshape(z, mul, ir.dim) @ table)  # [Z, mul, C * G]
        if self.batched[side]:
            return torch.stack(signals, dim=-1)  # [Z, K, C*G, blocks]
        return torch.cat(signals, dim=1).transpose(1, 2).unsqueeze(1)  # [Z, 1, C*G, slots]

    def forward(self, x1, x2, weight):
        d = self.descriptor
        z = x1.shape[0]
        forms = self.bilinear_forms(weight, x1)
        grid_sums = None
        for parity in self.parities:
            left, right = ("scalar", "scalar") if parity == "even" else ("phi", "psi")
            f1, f2 = self.lift(x1, 0, left), self.lift(x2, 1, right)
            sums = self._bilinear(parity, f1, f2, forms[parity])  # [Z, K, C*G, O]
            if parity == "odd":
                sums = sums[:, :, : sums.shape[2] // 2] + sums[:, :, sums.shape[2] // 2 :]
            grid_sums = sums if grid_sums is None else grid_sums + sums
        if not self.batched[2]:  # uuw sums its batch channel u into every output channel w
            grid_sums = grid_sums.sum(1, keepdim=True)
        blocks = []
        for block, (mul, ir) in enumerate(d.irreps_out):
            if block not in self.slots[2]:
                blocks.append(x1.new_zeros(z, mul * ir.dim))
                continue
            start = self.slots[2][block]
            if self.batched[2]:
                signal = grid_sums[..., start]  # [Z, K, G]
            else:
                signal = grid_sums[:, 0, :, start : start + mul].transpose(1, 2)  # [Z, mul, G]
            blocks.append((signal @ self.table(f"project_{ir.l}", x1)).reshape(z, mul * ir.dim))
        return torch.cat(blocks, dim=1) if blocks else x1.new_zeros(z, 0)

    def _bilinear(self, parity: str, f1: torch.Tensor, f2: torch.Tensor, form: torch.Tensor) -> torch.Tensor:
        """``sum_ab f1[..., a] M[b, a, o] f2[..., b]`` at every grid point: ``[Z, K, C*G, O]``."""
        n_a, n_b, n_o = self.slot_counts
        if form.shape[0] == 1 and form.shape[1] == 1 and f1.shape[1] == 1 and f2.shape[1] == 1:
            # one shared form: a GEMM over the used slot pairs, chunked over the batch
            pair_a, pair_b = getattr(self, f"pair_a_{parity}"), getattr(self, f"pair_b_{parity}")
            pair_form = form[0, 0].view(n_b, n_a, n_o)[pair_b, pair_a]  # [P, O]
            z, _, points, _ = f1.shape
            sums = PairBilinear.apply(f1.reshape(-1, n_a), f2.reshape(-1, n_b), pair_form, pair_a, pair_b)
            return sums.view(z, 1, points, n_o)
        partial = _apply_form(f2, form)  # [Z, K, C*G, A * O]
        partial = partial.reshape(*partial.shape[:3], n_a, n_o)
        return (f1.unsqueeze(-1) * partial).sum(-2)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode}, resolution={self.resolution}"


#: rows of :class:`PairBilinear` per chunk are chosen so that one chunk's pair products hold
#: about this many floats (a few MB: they stay in cache between the product and the GEMM).
CHUNK_FLOATS = 1 << 19


class PairBilinear(torch.autograd.Function):
    """``out[n, o] = sum_p f1[n, a_p] f2[n, b_p] form[p, o]`` over chunks of rows.

    ``f1 [N, A]``, ``f2 [N, B]``, ``form [P, O]``, ``pair_a``/``pair_b [P]`` (the slot pairs of the
    paths). The pair products ``[N, P]`` exist only per chunk, forward and backward; a backward
    that builds a graph runs differentiable whole-batch ops, so higher derivatives work.
    """

    @staticmethod
    def forward(ctx, f1, f2, form, pair_a, pair_b):
        out = f1.new_empty(f1.shape[0], form.shape[1])
        for rows in _chunks(f1.shape[0], form.shape[0]):
            torch.matmul(f1[rows][:, pair_a] * f2[rows][:, pair_b], form, out=out[rows])
        ctx.save_for_backward(f1, f2, form, pair_a, pair_b)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        f1, f2, form, pair_a, pair_b = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph
            grad_pairs = grad_out @ form.T
            grad_f1 = f1.new_zeros(f1.shape).index_add(1, pair_a, grad_pairs * f2[:, pair_b])
            grad_f2 = f2.new_zeros(f2.shape).index_add(1, pair_b, grad_pairs * f1[:, pair_a])
            grad_form = (f1[:, pair_a] * f2[:, pair_b]).T @ grad_out
            return grad_f1, grad_f2, grad_form, None, None
        grad_f1, grad_f2 = torch.zeros_like(f1), torch.zeros_like(f2)
        grad_form = torch.zeros_like(form)
        for rows in _chunks(f1.shape[0], form.shape[0]):
            left, right = f1[rows][:, pair_a], f2[rows][:, pair_b]
            grad_form.addmm_((left * right).T, grad_out[rows])
            grad_pairs = grad_out[rows] @ form.T
            grad_f1[rows].index_add_(1, pair_a, grad_pairs * right)
            grad_f2[rows].index_add_(1, pair_b, grad_pairs.mul_(left))
        return grad_f1, grad_f2, grad_form, None, None


def _chunks(rows: int, width: int) -> list[slice]:
    size = max(1, CHUNK_FLOATS // max(1, width))
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def _apply_form(signal: torch.Tensor, form: torch.Tensor) -> torch.Tensor:
    """``signal [Z, K or 1, C*G, B] @ form [Zw, K, B, X] -> [Z, K, C*G, X]`` as one GEMM when shared."""
    if form.shape[0] == 1 and form.shape[1] == 1:
        return signal @ form[0, 0]
    if form.shape[0] == 1 and signal.shape[1] == 1:
        return torch.einsum("zcb,kbx->zkcx", signal[:, 0], form[0])
    return signal @ form
