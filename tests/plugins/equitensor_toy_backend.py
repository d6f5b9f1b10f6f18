"""A third-party tensor-product backend, as a plugin package would ship it (test fixture).

``toy_dense`` computes the exact ``uvu`` Clebsch-Gordan product with one dense einsum per path
from ``equitensor.so3.wigner_3j``. It is registered only through the entry point declared in
``equitensor_toy_backend-0.1.dist-info/entry_points.txt`` beside this file, which is how the
backend contract suite proves that a new backend is picked up with no other edit.
"""

from __future__ import annotations

import torch

from equitensor import so3
from equitensor.ops.backends.base import TensorProductBackend, instruction_paths


class ToyDenseBackend(TensorProductBackend):
    """Exact ``uvu`` CG product, one ``einsum`` per path, e3nn's weight layout."""

    supported_modes = ("uvu",)

    def __init__(self, descriptor):
        super().__init__(descriptor)
        modes = {ins.mode for ins in descriptor.instructions}
        if not modes <= set(self.supported_modes):
            raise ValueError(f"toy_dense supports mode 'uvu' only, got {sorted(modes)}")
        self.paths = instruction_paths(descriptor)
        self.weight_numel = descriptor.weight_numel
        for k, ins in enumerate(descriptor.instructions):
            ir1, ir2, ir3 = descriptor.path_irreps(ins)
            self.add_table(f"path{k}", ins.coefficient * so3.wigner_3j(ir1.l, ir2.l, ir3.l))

    def forward(self, x1, x2, weight):
        d = self.descriptor
        z = x1.shape[0]
        blocks1 = [x1[:, s].reshape(z, mul, ir.dim) for (mul, ir), s in zip(d.irreps_in1, d.irreps_in1.slices())]
        blocks2 = [x2[:, s].reshape(z, mul, ir.dim) for (mul, ir), s in zip(d.irreps_in2, d.irreps_in2.slices())]
        outputs = [x1.new_zeros(z, mul, ir.dim) for mul, ir in d.irreps_out]
        for k, (ins, part) in enumerate(zip(d.instructions, d.weight_slices())):
            a, b = blocks1[ins.i_in1], blocks2[ins.i_in2]
            cg = self.table(f"path{k}", x1)
            if part is None:
                outputs[ins.i_out] = outputs[ins.i_out] + torch.einsum("zui,zvj,ijk->zuk", a, b, cg)
                continue
            w = (weight[part] if weight.ndim == 1 else weight[:, part]).reshape(-1, *ins.weight_shape)
            w = w.expand(z, *ins.weight_shape)
            outputs[ins.i_out] = outputs[ins.i_out] + torch.einsum("zuv,zui,zvj,ijk->zuk", w, a, b, cg)
        return torch.cat([o.reshape(z, mul * ir.dim) for o, (mul, ir) in zip(outputs, d.irreps_out)], dim=1)
