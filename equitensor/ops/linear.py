"""Equivariant linear map between irreps (weights and normalisation identical to ``e3nn.o3.Linear``)."""

from __future__ import annotations

import math

import torch

from ..irreps import Irreps, as_irreps, check_last_dim


class Linear(torch.nn.Module):
    """``y = x W`` channel mixing within each irrep type, no bias.

    Paths are every pair ``(i_in, i_out)`` with equal irreps, in e3nn's order (input block
    outer, output block inner); the flat ``weight`` concatenates their ``[mul_in, mul_out]``
    blocks, and each output is divided by ``sqrt(sum of mul_in feeding it)`` — exactly
    ``e3nn.o3.Linear(irreps_in, irreps_out)`` with its default ``path_normalization="element"``,
    so its ``weight`` can be copied over.

    Execution: per output block, one matmul against the input blocks of the same irrep
    concatenated along the channel axis (a single GEMM per irrep type in the usual case).
    Output blocks that no input can reach are zero (as in e3nn).

    Shapes: ``x [..., irreps_in.dim] -> [..., irreps_out.dim]`` (mul_ir layout).
    """

    def __init__(self, irreps_in, irreps_out):
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
            self._plan.append((i_out, mul_out, ir.dim, sources, [offsets[(i, i_out)] for i in sources], fan_in))
        self._in_slices = list(self.irreps_in.slices())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim(x, self.irreps_in, "x")
        batch = x.shape[:-1]
        x = x.reshape(-1, self.irreps_in.dim)
        z = x.shape[0]
        outputs = []
        for i_out, mul_out, dim, sources, wranges, fan_in in self._plan:
            if not sources:
                outputs.append(x.new_zeros(z, mul_out * dim))
                continue
            # [z, mul_in_total, dim]: input blocks of this irrep stacked along channels
            xs = torch.cat([x[:, self._in_slices[i]].reshape(z, -1, dim) for i in sources], dim=1)
            w = torch.cat(
                [self.weight[a:b].reshape(self.irreps_in[i].mul, mul_out) for i, (a, b) in zip(sources, wranges)]
            )
            y = torch.matmul(xs.transpose(1, 2), w / math.sqrt(fan_in))  # [z, dim, mul_out]
            outputs.append(y.transpose(1, 2).reshape(z, mul_out * dim))
        out = torch.cat(outputs, dim=1) if outputs else x.new_zeros(z, 0)
        return out.reshape(*batch, self.irreps_out.dim)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}, weight_numel={self.weight_numel}"
