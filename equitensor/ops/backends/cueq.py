"""Tensor-product backend ``cueq``: the ``cg`` product executed by NVIDIA cuEquivariance.

The descriptor is translated into a cuEquivariance segmented polynomial
(``cuequivariance.SegmentedTensorProduct``, one per connection mode) whose path coefficients are
equitensor's own ``coefficient * wigner_3j(l1, l2, l3)`` (e3nn >= 0.5 phases, ``component`` /
``element`` normalisation as the descriptor says) and whose weight segments are the instructions'
weight blocks in instruction order. So ``cueq`` computes exactly the ``cg`` map with the same flat
weights (``weight_numel`` and layout equal), and a model converts between the two without any
remapping. cuEquivariance's own ``O3`` Clebsch-Gordan tables are not used, so its phase and
normalisation conventions never enter.

Execution (``cuequivariance_torch.SegmentedPolynomial``):

* on CUDA with ``cuequivariance-ops-torch`` installed: the first kernel cuEquivariance accepts
  for the polynomial, ``uniform_1d`` (every segment of an operand one shape after flattening:
  MACE's convolution ``uvu`` with edge harmonics of multiplicity 1) or ``fused_tp`` (in the
  default dtype at construction);
* elsewhere (CPU, or no kernels): cuEquivariance's ``naive`` method (one ``einsum`` per path,
  plain torch autograd, any device and any order of derivative).

Operands are laid out ``ir_mul`` inside cuEquivariance (the kernels' layout); the public tensors
stay mul_ir and are transposed on the way in and out (blocks with multiplicity 1 or scalars
need no copy). ``message_passing`` hands the sender gather and the receiver sum to the
polynomial as input/output indices, which the CUDA kernels fuse (no ``[n_edges, dim_out]``
messages on GPU); the ``naive`` method gathers and scatters around its ``einsum``.

Install: ``pip install "equitensor[cueq]"``; on a GPU machine also
``pip install cuequivariance-ops-torch-cu12`` (or ``-cu13``) for the CUDA kernels.
"""

from __future__ import annotations

import torch

from ... import so3
import math

from ..descriptor import WEIGHT_SHAPES, TensorProductDescriptor
from .base import TensorProductBackend, instruction_paths

INSTALL_HINT = (
    'the cueq backend needs cuEquivariance: pip install "equitensor[cueq]" '
    "(and, for the CUDA kernels on a GPU machine, pip install cuequivariance-ops-torch-cu12)"
)

try:
    import cuequivariance as cue
    import cuequivariance_torch as cuet
except ImportError as error:  # pragma: no cover - exercised by hiding the module in the tests
    raise ImportError(INSTALL_HINT) from error

try:
    import cuequivariance_ops_torch  # noqa: F401

    HAS_CUDA_KERNELS = True
except ImportError:
    HAS_CUDA_KERNELS = False

#: cuEquivariance subscripts of each connection mode: weights, x1, x2, out (+ coefficient ijk).
SUBSCRIPTS = {
    "uvw": "uvw,iu,jv,kw+ijk",
    "uvu": "uv,iu,jv,ku+ijk",
    "uvv": "uv,iu,jv,kv+ijk",
    "uuw": "uw,iu,ju,kw+ijk",
    "uuu": "u,iu,ju,ku+ijk",
}
#: kernel methods tried in order on CUDA (the first whose preconditions the polynomial meets).
KERNEL_METHODS = ("uniform_1d", "fused_tp")


class MulIrToIrMul(torch.nn.Module):
    """Per-block transposition between e3nn's mul_ir layout and cuEquivariance's ir_mul.

    ``forward(x [Z, dim])``; ``inverse=True`` maps ir_mul back to mul_ir. The identity (no copy)
    when every block has multiplicity 1 or dimension 1.
    """

    def __init__(self, blocks: list[tuple[int, int]], inverse: bool = False):
        super().__init__()
        self.blocks = [(mul, dim) for mul, dim in blocks]
        self.inverse = inverse
        self.identity = all(mul == 1 or dim == 1 for mul, dim in self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        pieces = torch.split(x, [mul * dim for mul, dim in self.blocks], dim=-1)
        out = []
        for piece, (mul, dim) in zip(pieces, self.blocks):
            shape = (dim, mul) if self.inverse else (mul, dim)
            batch = x.shape[:-1]
            out.append(piece.reshape(*batch, *shape).transpose(-1, -2).reshape(*batch, mul * dim))
        return torch.cat(out, dim=-1)


def block_shapes(irreps) -> list[tuple[int, int]]:
    """``(mul, ir.dim)`` of every block."""
    return [(mul, ir.dim) for mul, ir in irreps]


def mode_polynomial(descriptor: TensorProductDescriptor, mode: str):
    """cuEquivariance polynomial ``[weights, x1, x2] -> [out]`` of the instructions in ``mode``.

    Segments: one per block of each irreps (``(ir.dim, mul)``, ir_mul), one weight segment per
    instruction of the mode (its weight shape, in instruction order). Path coefficient:
    ``instruction.coefficient * wigner_3j(l1, l2, l3)`` (equitensor's tables).
    """
    stp = cue.SegmentedTensorProduct.from_subscripts(SUBSCRIPTS[mode])
    operands = ((1, descriptor.irreps_in1), (2, descriptor.irreps_in2), (3, descriptor.irreps_out))
    for operand, irreps in operands:
        for mul, ir in irreps:
            stp.add_segment(operand, (ir.dim, mul))
    for ins in descriptor.instructions:
        if ins.mode != mode:
            continue
        ir1, ir2, ir_out = descriptor.path_irreps(ins)
        coefficient = ins.coefficient * so3.wigner_3j(ir1.l, ir2.l, ir_out.l)
        stp.add_path(_weight_shape(descriptor, ins), ins.i_in1, ins.i_in2, ins.i_out, c=coefficient)
    return cue.SegmentedPolynomial.eval_last_operand(stp)


def polynomial_modules(polynomial, name: str) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """``(naive, kernel)`` executions of a cuEquivariance polynomial.

    ``naive`` runs anywhere; ``kernel`` is the first of :data:`KERNEL_METHODS` whose
    preconditions the polynomial meets, or ``None`` without ``cuequivariance-ops-torch``.
    """
    naive = _constants_only(cuet.SegmentedPolynomial(polynomial, method="naive", name=name))
    if not HAS_CUDA_KERNELS:
        return naive, None
    for method in KERNEL_METHODS:
        # fused_tp computes in float32 unless told otherwise: use the dtype the model is built in
        math_dtype = torch.get_default_dtype() if method == "fused_tp" else None
        try:
            kernel = cuet.SegmentedPolynomial(polynomial, method=method, math_dtype=math_dtype, name=name)
            return naive, _constants_only(kernel)
        except (ValueError, AssertionError, RuntimeError, NotImplementedError):
            continue
    return naive, None


def _constants_only(module: torch.nn.Module) -> torch.nn.Module:
    """Keep cuEquivariance's coefficient buffers out of the state dict.

    They are tables rebuilt at construction, not state: a checkpoint of a ``cueq`` model then
    has exactly the parameters of the ``cg`` model it converts to and from.
    """
    for sub in module.modules():
        sub._non_persistent_buffers_set.update(sub._buffers.keys())
    return module


class KeepsCuequivarianceConstants(torch.nn.Module):
    """Casting the module (``.float()``, ``.double()``, ``.to(dtype)``) leaves cuEquivariance's
    coefficient buffers in the dtype they were built in (float64), only moving their device.

    Its ``naive`` method casts them to the inputs' dtype at each call, so a model cast to float32
    and back computes with the exact float64 coefficients again (our ``ConstantTables`` rule).
    """

    def keep_constants(self, *modules: torch.nn.Module) -> None:
        """Record the floating-point buffers of ``modules`` (call once, after building them)."""
        self._cueq_constants = [
            (sub, name, buffer.detach().clone())
            for module in modules
            for sub in module.modules()
            for name, buffer in sub._buffers.items()
            if buffer is not None and buffer.is_floating_point()
        ]

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        for sub, name, master in getattr(self, "_cueq_constants", ()):
            sub._buffers[name] = master.to(sub._buffers[name].device)
        return result


class CueqBackend(KeepsCuequivarianceConstants, TensorProductBackend):
    """``cg``'s map (same weights, same ``weight_numel``) executed by cuEquivariance.

    Every connection mode is supported; the instructions of each mode form one cuEquivariance
    polynomial, and instructions without a weight get a constant weight of one. See the module
    docstring for the execution on CPU and CUDA.
    """

    parameterization = "per_path"
    supported_modes = ("uvw", "uvu", "uvv", "uuw", "uuu")
    realises_odd_paths = True
    exact = True

    def __init__(self, descriptor: TensorProductDescriptor):
        super().__init__(descriptor)
        self.paths = instruction_paths(descriptor)
        self.weight_numel = descriptor.weight_numel
        modes = list(dict.fromkeys(ins.mode for ins in descriptor.instructions))
        self.naive = torch.nn.ModuleList()
        self.kernels = torch.nn.ModuleList()
        self.has_kernel = []
        # per mode: where its weight segments come from in [weight | 1] (index weight_numel = 1)
        slices, ones = descriptor.weight_slices(), self.weight_numel
        self._weight_index_names = []
        for mode in modes:
            naive, kernel = polynomial_modules(mode_polynomial(descriptor, mode), f"equitensor_cueq_{mode}")
            self.naive.append(naive)
            self.kernels.append(kernel if kernel is not None else torch.nn.Identity())
            self.has_kernel.append(kernel is not None)
            index = []
            for ins, piece in zip(descriptor.instructions, slices):
                if ins.mode == mode:
                    if piece is None:
                        index += [ones] * math.prod(_weight_shape(descriptor, ins))
                    else:
                        index += list(range(piece.start, piece.stop))
            name = f"weight_index_{mode}"
            if index == list(range(self.weight_numel)):
                self._weight_index_names.append(None)  # the flat weights as they are
            else:
                self.register_buffer(name, torch.tensor(index, dtype=torch.long), persistent=False)
                self._weight_index_names.append(name)
        self.keep_constants(self.naive, self.kernels)
        self.to_ir_mul1 = MulIrToIrMul(block_shapes(descriptor.irreps_in1))
        self.to_ir_mul2 = MulIrToIrMul(block_shapes(descriptor.irreps_in2))
        self.to_mul_ir = MulIrToIrMul(block_shapes(descriptor.irreps_out), inverse=True)

    def _mode_weights(self, weight: torch.Tensor | None, like: torch.Tensor) -> list[torch.Tensor]:
        """The weight input of every mode's polynomial, ``[Z or 1, numel_mode]``."""
        if weight is None:
            weight = like.new_zeros(1, 0)
        elif weight.dim() == 1:
            weight = weight.unsqueeze(0)
        if all(name is None for name in self._weight_index_names):
            return [weight]
        augmented = torch.cat([weight, weight.new_ones(weight.shape[0], 1)], dim=1)
        return [
            weight if name is None else augmented.index_select(1, getattr(self, name))
            for name in self._weight_index_names
        ]

    def _run(self, x1, x2, weight, n_out: int | None, sender=None, receiver=None) -> torch.Tensor:
        x1, x2 = self.to_ir_mul1(x1), self.to_ir_mul2(x2)
        input_indices = {} if sender is None else {1: sender}
        output_indices = {} if receiver is None else {0: receiver}
        # the polynomial reads only the batch size of this shape tensor (no data, no sync)
        output_shapes = {} if receiver is None else {0: x1.new_empty(n_out, 1)}
        out = None
        for k, w in enumerate(self._mode_weights(weight, x1)):
            use_kernel = self.has_kernel[k] and x1.is_cuda
            module = self.kernels[k] if use_kernel else self.naive[k]
            [part] = module([w, x1, x2], input_indices, output_shapes, output_indices)
            out = part if out is None else out + part
        if out is None:  # no instructions: the zero map
            return x1.new_zeros(x1.shape[0] if n_out is None else n_out, self.descriptor.irreps_out.dim)
        return self.to_mul_ir(out)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        return self._run(x1, x2, weight, None)

    def message_passing(self, x1, x2, weight, sender, receiver) -> torch.Tensor:
        if x2.shape[0] == 0:  # cuEquivariance's naive method reads an empty index as "no index"
            return x1.new_zeros(x1.shape[0], self.descriptor.irreps_out.dim)
        return self._run(x1, x2, weight, x1.shape[0], sender, receiver)


def _weight_shape(descriptor: TensorProductDescriptor, ins) -> tuple[int, ...]:
    """The weight block shape of an instruction's mode (also for an unweighted instruction)."""
    mul1, mul2 = descriptor.irreps_in1[ins.i_in1].mul, descriptor.irreps_in2[ins.i_in2].mul
    return WEIGHT_SHAPES[ins.mode](mul1, mul2, descriptor.irreps_out[ins.i_out].mul)

