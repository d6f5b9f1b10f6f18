"""Equivariant linear map between irreps (weights and normalisation identical to ``e3nn.o3.Linear``)."""

from __future__ import annotations

import math

import torch

from ..irreps import Irreps, as_irreps, check_last_dim

METHODS = ("auto", "dense", "gather", "blocks")


class Linear(torch.nn.Module):
    """``y = x W`` channel mixing within each irrep type, no bias.

    Paths are every pair ``(i_in, i_out)`` with equal irreps, in e3nn's order (input block
    outer, output block inner); the flat ``weight`` concatenates their ``[mul_in, mul_out]``
    blocks, and each output is divided by ``sqrt(sum of mul_in feeding it)`` — exactly
    ``e3nn.o3.Linear(irreps_in, irreps_out)`` with its default ``path_normalization="element"``,
    so its ``weight`` can be copied over.

    Execution (no layout conversion; both are plain GEMMs on mul_ir data):

    * ``dense`` — the block-diagonal matrix ``M [dim_in, dim_out]`` (each path's
      ``W ⊗ I_{2l+1}``, scattered from the flat weight by a precomputed index): one ``x @ M``,
      its backward two GEMMs, at the price of multiplying zeros; ``"auto"`` never picks it
      (it was not the faster route in ``benchmarks/linear.py``), so only on request.
    * ``gather`` — otherwise, one GEMM per irrep type: a single column gather lays every input
      block of that irrep out as ``[Z * (2l+1), mul_in_total]`` (ir_mul order, so the gather is
      the only copy), one ``mm`` with the stacked weights ``[mul_in_total, mul_out_total]``
      gives every output block of that irrep, and one gather at the end puts all outputs back
      in mul_ir order.
    * ``blocks`` — one matmul per output block against the input blocks of the same irrep
      stacked along channels (transposed copies around each matmul).

    ``method="auto"`` (the default) picks ``gather`` when an irrep occurs in more than one input
    or output block (e.g. MACE's convolution output, 10 blocks of 4 irreps), where one GEMM per
    irrep type replaces many small ones, else ``blocks``; any of the three can be forced.
    ``benchmarks/linear.py`` measures the three against e3nn. ``self.method`` names the one
    chosen.

    Shapes: ``x [..., irreps_in.dim] -> [..., irreps_out.dim]`` (mul_ir layout).
    """

    def __init__(self, irreps_in, irreps_out, method: str = "auto"):
        super().__init__()
        self.irreps_in: Irreps = as_irreps(irreps_in)
        self.irreps_out: Irreps = as_irreps(irreps_out)
        self.paths = [
            (i_in, i_out)
            for i_in, (_, ir_in) in enumerate(self.irreps_in)
            for i_out, (_, ir_out) in enumerate(self.irreps_out)
            if ir_in == ir_out
        ]
        self.weight_numel = sum(self.irreps_in[i].mul * self.irreps_out[o].mul for i, o in self.paths)
        self.weight = torch.nn.Parameter(torch.randn(self.weight_numel))
        # plain ints for forward (traced code must not touch e3nn's Irrep objects)
        self._dim_in, self._dim_out = self.irreps_in.dim, self.irreps_out.dim
        self._muls_in = [mul for mul, _ in self.irreps_in]

        # For each output block: (weight slices of its paths, input blocks) in path order.
        offsets, start = {}, 0
        for i_in, i_out in self.paths:
            n = self.irreps_in[i_in].mul * self.irreps_out[i_out].mul
            offsets[(i_in, i_out)] = (start, start + n)
            start += n
        self._plan = []
        for i_out, (mul_out, ir) in enumerate(self.irreps_out):
            sources = [i_in for i_in, o in self.paths if o == i_out]
            fan_in = sum(self.irreps_in[i].mul for i in sources)
            self._plan.append(
                (i_out, mul_out, ir.dim, sources, [offsets[(i, i_out)] for i in sources], fan_in)
            )
        self._in_slices = list(self.irreps_in.slices())

        if method == "auto":
            repeated = any(
                len([1 for _, ir in irreps if ir == ir_]) > 1
                for irreps in (self.irreps_in, self.irreps_out)
                for _, ir_ in irreps
            )
            method = "gather" if repeated else "blocks"
        if method not in METHODS:
            raise ValueError(f"Linear: unknown method {method!r}; expected one of {METHODS}")
        self.method = method
        if self.method == "dense":
            self._build_dense_index(offsets)
        if self.method == "gather":
            self._build_gather_plan(offsets)

    def _build_gather_plan(self, offsets) -> None:
        """Per irrep type: input columns in ir_mul order, the weight blocks of its paths, and
        where its outputs go; plus the final column order of the concatenated outputs."""
        in_starts = [s.start for s in self.irreps_in.slices()]
        out_starts = [s.start for s in self.irreps_out.slices()]
        self._groups = []
        produced = []  # mul_ir output column of each column of the concatenated group outputs
        for ir in sorted({ir for _, ir in self.irreps_out}, key=lambda ir: (ir.l, ir.p)):
            outs = [i for i, (_, ir_out) in enumerate(self.irreps_out) if ir_out == ir]
            ins = [i for i, (_, ir_in) in enumerate(self.irreps_in) if ir_in == ir]
            d = ir.dim
            out_cols = torch.cat(
                [out_starts[o] + torch.arange(self.irreps_out[o].mul) * d for o in outs]
            )  # first component of every output channel of this irrep
            if not ins:
                self._groups.append((d, None, None, None, len(out_cols)))
                produced.append((out_cols[None, :] + torch.arange(d)[:, None]).reshape(-1))
                continue
            in_cols = torch.cat([in_starts[i] + torch.arange(self.irreps_in[i].mul) * d for i in ins])
            gather = (in_cols[None, :] + torch.arange(d)[:, None]).reshape(-1)  # [d * mul_in]
            # weight rows: input channels of all source blocks; columns: output channels of all blocks
            rows, cols, sources, scales = [], [], [], []
            row0 = {i: sum(self.irreps_in[j].mul for j in ins[: ins.index(i)]) for i in ins}
            col0 = {o: sum(self.irreps_out[j].mul for j in outs[: outs.index(o)]) for o in outs}
            fan_in = {plan[0]: plan[5] for plan in self._plan}
            for i_in, i_out in self.paths:
                if i_in not in row0 or i_out not in col0:
                    continue
                m_in, m_out = self.irreps_in[i_in].mul, self.irreps_out[i_out].mul
                u, w = torch.meshgrid(torch.arange(m_in), torch.arange(m_out), indexing="ij")
                rows.append((row0[i_in] + u).reshape(-1))
                cols.append((col0[i_out] + w).reshape(-1))
                sources.append((offsets[(i_in, i_out)][0] + u * m_out + w).reshape(-1))
                scales.append(torch.full((m_in * m_out,), 1 / math.sqrt(fan_in[i_out]), dtype=torch.float64))
            shape = (len(in_cols), len(out_cols))
            index = torch.cat(rows) * shape[1] + torch.cat(cols)
            k = len(self._groups)
            # integer indices as non-persistent buffers: they follow .to(device), never the dtype
            self.register_buffer(f"_gather_{k}", gather, persistent=False)
            self.register_buffer(f"_gather_index_{k}", index, persistent=False)
            self.register_buffer(f"_gather_source_{k}", torch.cat(sources), persistent=False)
            # float64 master of the path normalisation (casting the module must not round it)
            self._groups.append((d, k, torch.cat(scales), shape, len(out_cols)))
            produced.append((out_cols[None, :] + torch.arange(d)[:, None]).reshape(-1))
        order = torch.cat(produced) if produced else torch.zeros(0, dtype=torch.long)
        # concatenated outputs -> mul_ir columns
        self.register_buffer("_gather_output_order", torch.argsort(order), persistent=False)

    def _build_dense_index(self, offsets) -> None:
        """Flat positions in ``M [dim_in, dim_out]`` and the weight entry each one takes (scaled)."""
        positions, sources, scales = [], [], []
        in_starts = [s.start for s in self.irreps_in.slices()]
        out_starts = [s.start for s in self.irreps_out.slices()]
        fan_in = {plan[0]: plan[5] for plan in self._plan}  # i_out -> sum of mul_in feeding it
        for i_in, i_out in self.paths:
            mul_in, ir = self.irreps_in[i_in]
            mul_out = self.irreps_out[i_out].mul
            u, w, m = torch.meshgrid(
                torch.arange(mul_in), torch.arange(mul_out), torch.arange(ir.dim), indexing="ij"
            )
            rows = in_starts[i_in] + u * ir.dim + m
            cols = out_starts[i_out] + w * ir.dim + m
            positions.append((rows * self.irreps_out.dim + cols).reshape(-1))
            sources.append((offsets[(i_in, i_out)][0] + u * mul_out + w).reshape(-1))
            scales.append(
                torch.full((positions[-1].numel(),), 1 / math.sqrt(fan_in[i_out]), dtype=torch.float64)
            )
        empty = [torch.zeros(0, dtype=torch.long)]  # a map without paths is the zero matrix
        self.register_buffer("_dense_position", torch.cat(empty + positions), persistent=False)
        self.register_buffer("_dense_source", torch.cat(empty + sources), persistent=False)
        self._dense_scale = torch.cat([torch.zeros(0, dtype=torch.float64)] + scales)

    def dense_matrix(self) -> torch.Tensor:
        """``M [dim_in, dim_out]`` with ``x @ M == forward(x)`` (differentiable in ``weight``)."""
        values = self.weight[self._dense_source] * self._dense_scale.to(self.weight)
        flat = self.weight.new_zeros(self._dim_in * self._dim_out)
        return flat.index_put((self._dense_position,), values).reshape(self._dim_in, self._dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim(x, self.irreps_in, "x", self._dim_in)
        batch = x.shape[:-1]
        x = x.reshape(-1, self._dim_in)
        z = x.shape[0]
        if self.method == "dense":
            return (x @ self.dense_matrix()).reshape(*batch, self._dim_out)
        if self.method == "gather":
            return self._gather_forward(x).reshape(*batch, self._dim_out)
        outputs = []
        for _i_out, mul_out, dim, sources, wranges, fan_in in self._plan:
            if not sources:
                outputs.append(x.new_zeros(z, mul_out * dim))
                continue
            # [z, mul_in_total, dim]: input blocks of this irrep stacked along channels
            blocks = [x[:, self._in_slices[i]].reshape(z, -1, dim) for i in sources]
            xs = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
            weights = [
                self.weight[a:b].reshape(self._muls_in[i], mul_out)
                for i, (a, b) in zip(sources, wranges)
            ]
            w = weights[0] if len(weights) == 1 else torch.cat(weights)
            if dim == 1:  # scalars: already [z, mul_in], no transposes
                outputs.append(xs.reshape(z, -1) @ (w / math.sqrt(fan_in)))
                continue
            y = torch.matmul(xs.transpose(1, 2), w / math.sqrt(fan_in))  # [z, dim, mul_out]
            outputs.append(y.transpose(1, 2).reshape(z, mul_out * dim))
        out = torch.cat(outputs, dim=1) if outputs else x.new_zeros(z, 0)
        return out.reshape(*batch, self._dim_out)

    def _gather_forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.shape[0]
        parts = []
        for d, k, scales, shape, mul_out in self._groups:
            if k is None:
                parts.append(x.new_zeros(z, d * mul_out))
                continue
            index, sources = getattr(self, f"_gather_index_{k}"), getattr(self, f"_gather_source_{k}")
            w = self.weight.new_zeros(shape[0] * shape[1]).index_put(
                (index,), self.weight[sources] * scales.to(self.weight)
            )
            xs = x.index_select(1, getattr(self, f"_gather_{k}")).reshape(
                z * d, shape[0]
            )  # [Z * d, mul_in], ir_mul
            parts.append((xs @ w.reshape(shape)).reshape(z, d * mul_out))
        out = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0] if parts else x.new_zeros(z, 0)
        return out.index_select(1, self._gather_output_order)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, weight_numel={self.weight_numel}, method={self.method!r}"
        )
