"""Backend ``e3nn``: ``e3nn.o3.TensorProduct`` behind our interface — the reference implementation.

This is the one place where the installed e3nn's version matters: e3nn 0.4.4 (mace-torch's pin)
has other signs than ours (e3nn >= 0.5) on 16 ``wigner_3j`` blocks. The weights of a weighted
path whose block has the other sign are negated before e3nn sees them
(:func:`installed_wigner_3j_sign`), so the backend computes our convention's tensor product on
every e3nn version; an unweighted path with a flipped block is refused.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from e3nn import o3

from ... import so3
from ..._dtype import default_dtype
from .base import TensorProductBackend, instruction_paths


@functools.cache
def installed_wigner_3j_sign(l1: int, l2: int, l3: int) -> float:
    """``+1`` or ``-1``: the installed e3nn's ``wigner_3j(l1, l2, l3)`` block relative to ours.

    ``-1`` happens only under e3nn < 0.5 (16 of the 111 blocks with l <= 5). Raises
    ``RuntimeError`` if the installed block differs by more than a sign (an e3nn we do not know).
    """
    theirs = o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()
    overlap = float((theirs * so3.wigner_3j(l1, l2, l3)).sum())
    if abs(abs(overlap) - 1) > 1e-9:
        import e3nn

        raise RuntimeError(
            f"the installed e3nn {e3nn.__version__}'s wigner_3j({l1}, {l2}, {l3}) differs from equitensor's "
            f"by more than a sign (overlap {overlap:.3g}); use e3nn 0.4.4 or >= 0.5, or another backend"
        )
    return math.copysign(1.0, overlap)


def installed_e3nn_weight_signs(descriptor) -> np.ndarray:
    """``[weight_numel]`` of ``+1 / -1``: e3nn-layout weights times this give, through the installed
    e3nn's ``TensorProduct``, our convention's product (all ``+1`` under e3nn >= 0.5).

    Raises ``ValueError`` for an unweighted path whose ``wigner_3j`` block has the other sign.
    """
    d = descriptor
    weight_sign = np.ones(d.weight_numel)
    for ins, weights in zip(d.instructions, d.weight_slices()):
        ir1, ir2, ir3 = d.path_irreps(ins)
        if installed_wigner_3j_sign(ir1.l, ir2.l, ir3.l) > 0:
            continue
        if weights is None:
            import e3nn

            raise ValueError(
                f"backend 'e3nn': the installed e3nn {e3nn.__version__} has the opposite sign of "
                f"wigner_3j({ir1.l}, {ir2.l}, {ir3.l}) and the path {ir1} x {ir2} -> {ir3} has no "
                "weight to absorb it; install e3nn>=0.5 or use backend 'cg'"
            )
        weight_sign[weights] = -1.0
    return weight_sign


class E3nnBackend(TensorProductBackend):
    """Runs the descriptor with ``e3nn.o3.TensorProduct`` (weights in e3nn's flat layout)."""

    def __init__(self, descriptor):
        super().__init__(descriptor)
        d = descriptor
        instructions = [
            (i.i_in1, i.i_in2, i.i_out, i.mode, i.has_weight, i.path_weight) for i in d.instructions
        ]
        weight_sign = installed_e3nn_weight_signs(d)
        # only when a sign differs (e3nn < 0.5); otherwise forward passes the weights untouched
        self.flips_weights = bool((weight_sign < 0).any())
        self.add_table("weight_sign", weight_sign)

        def make(shared: bool) -> o3.TensorProduct:
            return o3.TensorProduct(
                d.irreps_in1, d.irreps_in2, d.irreps_out, instructions,
                irrep_normalization=d.irrep_normalization, path_normalization=d.path_normalization,
                internal_weights=False, shared_weights=shared,
            )  # fmt: skip

        # e3nn builds its wigner_3j buffers in the default dtype: build them in float64 and round
        # once to the default dtype, like every other module built now.
        with default_dtype(torch.float64) as previous:
            self.shared = make(True)
            self.per_sample = make(False)
        self.shared.to(previous)
        self.per_sample.to(previous)
        self.weight_numel = self.shared.weight_numel
        self.paths = instruction_paths(d)

    def forward(self, x1, x2, weight):
        if self.flips_weights and weight is not None:
            weight = weight * self.table("weight_sign", weight)
        if weight is None or weight.ndim == 1:
            return self.shared(x1, x2, weight if weight is not None else torch.empty(0, dtype=x1.dtype))
        return self.per_sample(x1, x2, weight)
