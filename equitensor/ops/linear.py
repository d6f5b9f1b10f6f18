"""Equivariant linear map between irreps (weights and normalisation identical to ``e3nn.o3.Linear``)."""

from __future__ import annotations

import math

import torch

from ..irreps import Irreps, as_irreps, check_last_dim

#: ``dense`` execution when ``dim_in * dim_out <= DENSE_MAX_WASTE * (useful multiply-adds)``:
#: one GEMM that multiplies zeros beat the per-block matmuls and their transposes at 4x waste
#: (128x0e+128x1o, float32, 2 CPU threads: fwd 148 vs 184 ms for e3nn, 10k samples).
DENSE_MAX_WASTE = 4.0


class Linear(torch.nn.Module):
    """``y = x W`` channel mixing within each irrep type, no bias.

    Paths are every pair ``(i_in, i_out)`` with equal irreps, in e3nn's order (input block
    outer, output block inner); the flat ``weight`` concatenates their ``[mul_in, mul_out]``
    blocks, and each output is divided by ``sqrt(sum of mul_in feeding it)`` — exactly
    ``e3nn.o3.Linear(irreps_in, irreps_out)`` with its default ``path_normalization="element"``,
    so its ``weight`` can be copied over.

    Execution (no layout conversion; both are plain GEMMs on mul_ir data):

    * ``dense`` — when the block-diagonal matrix ``M [dim_in, dim_out]`` (each path's
      ``W ⊗ I_{2l+1}``, scattered from the flat weight by a precomputed index) costs at most
      :data:`DENSE_MAX_WASTE` times the useful multiply-adds, the whole map is one ``x @ M`` and
      its backward two GEMMs. Typical for few small irreps (``128x0e+128x1o``: 4x).
    * ``blocks`` — otherwise one matmul per output block against the input blocks of the same
      irrep stacked along channels; scalar blocks (``2l+1 = 1``) skip the transposes.

    ``method=None`` picks one of them; ``"dense"`` or ``"blocks"`` forces it.

    Shapes: ``x [..., irreps_in.dim] -> [..., irreps_out.dim]`` (mul_ir layout).
    """

    def __init__(self, irreps_in, irreps_out, method: str | None = None):
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

        useful = sum(
            self.irreps_in[i].mul * self.irreps_out[o].mul * self.irreps_in[i].ir.dim for i, o in self.paths
        )
        if method is None:
            method = (
                "dense"
                if self.irreps_in.dim * self.irreps_out.dim <= DENSE_MAX_WASTE * max(useful, 1)
                else "blocks"
            )
        if method not in ("dense", "blocks"):
            raise ValueError(
                f"Linear: unknown method {method!r}; expected 'dense', 'blocks' or None (automatic)"
            )
        self.method = method
        if self.method == "dense":
            self._build_dense_index(offsets)

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
        self._dense_position = torch.cat(positions)
        self._dense_source = torch.cat(sources)
        self._dense_scale = torch.cat(scales)

    def dense_matrix(self) -> torch.Tensor:
        """``M [dim_in, dim_out]`` with ``x @ M == forward(x)`` (differentiable in ``weight``)."""
        values = self.weight[self._dense_source] * self._dense_scale.to(self.weight.dtype)
        flat = self.weight.new_zeros(self.irreps_in.dim * self.irreps_out.dim)
        return flat.index_put((self._dense_position,), values).reshape(
            self.irreps_in.dim, self.irreps_out.dim
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim(x, self.irreps_in, "x")
        batch = x.shape[:-1]
        x = x.reshape(-1, self.irreps_in.dim)
        z = x.shape[0]
        if self.method == "dense":
            return (x @ self.dense_matrix()).reshape(*batch, self.irreps_out.dim)
        outputs = []
        for _i_out, mul_out, dim, sources, wranges, fan_in in self._plan:
            if not sources:
                outputs.append(x.new_zeros(z, mul_out * dim))
                continue
            # [z, mul_in_total, dim]: input blocks of this irrep stacked along channels
            xs = torch.cat([x[:, self._in_slices[i]].reshape(z, -1, dim) for i in sources], dim=1)
            w = torch.cat(
                [
                    self.weight[a:b].reshape(self.irreps_in[i].mul, mul_out)
                    for i, (a, b) in zip(sources, wranges)
                ]
            )
            if dim == 1:  # scalars: already [z, mul_in], no transposes
                outputs.append(xs.reshape(z, -1) @ (w / math.sqrt(fan_in)))
                continue
            y = torch.matmul(xs.transpose(1, 2), w / math.sqrt(fan_in))  # [z, dim, mul_out]
            outputs.append(y.transpose(1, 2).reshape(z, mul_out * dim))
        out = torch.cat(outputs, dim=1) if outputs else x.new_zeros(z, 0)
        return out.reshape(*batch, self.irreps_out.dim)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, weight_numel={self.weight_numel}, method={self.method!r}"
        )
