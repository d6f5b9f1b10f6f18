"""Helpers shared by the factorised-backend tests: irreps families and cg weights from factors."""

from __future__ import annotations

import torch

from equitensor import so3
from equitensor.irreps import natural_irreps  # noqa: F401 - the irreps family the backend tests use


def factor_weights(tp, weight: torch.Tensor) -> tuple[list, list, list]:
    """Split a factorised weight ``[Z, weight_numel]`` into per-block channel weights."""
    d = tp.descriptor
    off1, off2, off_out = tp.impl._weight_offsets

    def blocks(irreps, start):
        out = []
        for mul, _ in irreps:
            out.append(weight[:, start : start + mul])
            start += mul
        return out

    return blocks(d.irreps_in1, off1), blocks(d.irreps_in2, off2), blocks(d.irreps_out, off_out)


def cg_weights_from_factors(cg_tp, factorised_tp, weight: torch.Tensor, gaunt: bool) -> torch.Tensor:
    """Per-path ``cg`` weights equal to the factorised product (times ``gaunt_scale`` for Gaunt)."""
    w1, w2, wo = factor_weights(factorised_tp, weight)
    paths = []
    for ins in cg_tp.instructions:
        ir1, ir2, ir3 = cg_tp.descriptor.path_irreps(ins)
        scale = so3.gaunt_scale(ir1.l, ir2.l, ir3.l) if gaunt else 1.0
        a, b, c = w1[ins.i_in1], w2[ins.i_in2], wo[ins.i_out]
        if ins.mode == "uvu":
            block = a[:, :, None] * b[:, None, :] * c[:, :, None]
        elif ins.mode == "uvv":
            block = a[:, :, None] * b[:, None, :] * c[:, None, :]
        else:  # uuu
            block = a * b * c
        paths.append(scale * block.reshape(weight.shape[0], -1))
    return torch.cat(paths, dim=1)
