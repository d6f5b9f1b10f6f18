"""Backend ``e3nn``: ``e3nn.o3.TensorProduct`` behind our interface — the reference implementation."""

from __future__ import annotations

import torch
from e3nn import o3

from .base import TensorProductBackend, instruction_paths


class E3nnBackend(TensorProductBackend):
    """Runs the descriptor with ``e3nn.o3.TensorProduct`` (weights in e3nn's flat layout)."""

    def __init__(self, descriptor):
        super().__init__(descriptor)
        d = descriptor
        instructions = [
            (i.i_in1, i.i_in2, i.i_out, i.mode, i.has_weight, i.path_weight) for i in d.instructions
        ]

        def make(shared: bool) -> o3.TensorProduct:
            return o3.TensorProduct(
                d.irreps_in1, d.irreps_in2, d.irreps_out, instructions,
                irrep_normalization=d.irrep_normalization, path_normalization=d.path_normalization,
                internal_weights=False, shared_weights=shared,
            )  # fmt: skip

        # e3nn builds its wigner_3j buffers in the default dtype: build them in float64 and round
        # once to the default dtype, like every other module built now.
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            self.shared = make(True)
            self.per_sample = make(False)
        finally:
            torch.set_default_dtype(previous)
        self.shared.to(previous)
        self.per_sample.to(previous)
        self.weight_numel = self.shared.weight_numel
        self.paths = instruction_paths(d)

    def forward(self, x1, x2, weight):
        if weight is None or weight.ndim == 1:
            return self.shared(x1, x2, weight if weight is not None else torch.empty(0, dtype=x1.dtype))
        return self.per_sample(x1, x2, weight)
