"""Method ``grouped``: paths with the same mode and multiplicities stacked, one ``einsum`` per group.

Fits channel-mixing modes (``uvw``, ``uuw``), where the work is matrix products, and runs on any
device: it is what ``auto`` runs off the CPU. Its forward reads only ints, strings and tables
prepared at plan time, so ``torch.compile(fullgraph=True)`` traces it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .... import so3
from ...descriptor import TensorProductDescriptor
from .executor import Executor

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


class _Group(NamedTuple):
    """One group as strings (einsum equations; table names carry the group number)."""

    name: str  # suffix of its tables: cg_<name>, x1_<name>, x2_<name>, out_<name>, weight_<name>
    per_sample: str  # einsum with per-sample weights (unweighted groups: without weights)
    shared: str  # einsum with shared weights
    weighted: bool
    width: int  # output columns the group writes (padding included)


class GroupedPaths(Executor):
    """Paths grouped by ``(mode, has_weight, mul1, mul2, mul_out)``; one batched einsum per group.

    Per group, index tables gather ``x1 -> [Z, P, mul1, d1_max]`` and ``x2 -> [Z, P, mul2,
    d2_max]`` (padding points to an appended zero column), the padded CG blocks ``[P, d1_max,
    d2_max, do_max]`` are one table, weights are gathered to ``[(Z,) P, *weight_shape]``, and the
    result ``[Z, P, mul_out, do_max]`` is added into the output columns with one ``index_add``
    (padding goes to a discarded extra column). The loop runs over groups, never over paths.
    """

    method = "grouped"

    def __init__(self, descriptor: TensorProductDescriptor, instruction_ids):
        super().__init__()
        d = descriptor
        self.dim_out = d.irreps_out.dim
        weight_slices = d.weight_slices()
        self.groups: list[_Group] = []
        for g, ((mode, has_weight, *_muls), ks) in enumerate(_group_instructions(d, instruction_ids).items()):
            instructions = [d.instructions[k] for k in ks]
            irs = [d.path_irreps(ins) for ins in instructions]
            d1, d2, do = (max(ir[c].dim for ir in irs) for c in range(3))
            cg = np.zeros((len(ks), d1, d2, do))
            for p, (ir1, ir2, iro) in enumerate(irs):
                cg[p, : ir1.dim, : ir2.dim, : iro.dim] = instructions[p].coefficient * so3.wigner_3j(ir1.l, ir2.l, iro.l)
            name = str(g)
            self.add_table(f"cg_{name}", cg)
            self.add_index(f"x1_{name}", _padded_columns(d.irreps_in1, [ins.i_in1 for ins in instructions], d1))
            self.add_index(f"x2_{name}", _padded_columns(d.irreps_in2, [ins.i_in2 for ins in instructions], d2))
            out = _padded_columns(d.irreps_out, [ins.i_out for ins in instructions], do)
            self.add_index(f"out_{name}", out.reshape(-1))
            if has_weight:
                shape = instructions[0].weight_shape
                self.add_index(
                    f"weight_{name}",
                    np.stack([np.arange(weight_slices[k].start, weight_slices[k].stop).reshape(shape) for k in ks]),
                )
                equations = (_GROUP_EINSUM[mode].format(z="z"), _GROUP_EINSUM[mode].format(z=""))
            else:
                equations = (_GROUP_UNWEIGHTED[mode],) * 2
            self.groups.append(_Group(name, *equations, has_weight, out.size))

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        z, device = x1.shape[0], x1.device
        x1 = torch.cat([x1, x1.new_zeros(z, 1)], dim=1)  # the padding column
        x2 = torch.cat([x2, x2.new_zeros(z, 1)], dim=1)
        out = x1.new_zeros(z, self.dim_out + 1)
        for group in self.groups:
            operands = [
                x1[:, self.index(f"x1_{group.name}", device)],
                x2[:, self.index(f"x2_{group.name}", device)],
                self.table(f"cg_{group.name}", x1),
            ]
            equation = group.per_sample
            if group.weighted:
                columns = self.index(f"weight_{group.name}", device)
                per_sample = weight.ndim == 2
                operands.append(weight[:, columns] if per_sample else weight[columns])
                equation = group.per_sample if per_sample else group.shared
            y = torch.einsum(equation, *operands)
            scatter = self.index(f"out_{group.name}", device)
            out = out.index_add(1, scatter, y.reshape(z, group.width))
        return out[:, :-1]


def _group_instructions(d: TensorProductDescriptor, instruction_ids) -> dict[tuple, list[int]]:
    """Instructions by ``(mode, has_weight, mul1, mul2, mul_out)``: those of one key stack."""
    groups: dict[tuple, list[int]] = {}
    for k in instruction_ids:
        ins = d.instructions[k]
        muls = (d.irreps_in1[ins.i_in1].mul, d.irreps_in2[ins.i_in2].mul, d.irreps_out[ins.i_out].mul)
        groups.setdefault((ins.mode, ins.has_weight, *muls), []).append(k)
    return groups


def _padded_columns(irreps, blocks: list[int], width: int) -> np.ndarray:
    """Flat mul_ir columns ``[P, mul, width]`` of each listed block; padding -> ``irreps.dim``."""
    slices = list(irreps.slices())
    rows = []
    for i in blocks:
        mul, ir = irreps[i]
        cols = np.full((mul, width), irreps.dim)
        cols[:, : ir.dim] = slices[i].start + np.arange(mul)[:, None] * ir.dim + np.arange(ir.dim)
        rows.append(cols)
    return np.stack(rows)
