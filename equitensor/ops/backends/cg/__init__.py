"""Backend ``cg``: the exact Clebsch-Gordan tensor product (every path, one weight block per path).

Weights use e3nn's flat layout (instruction order, each block row-major with the shapes of
:data:`~equitensor.ops.descriptor.WEIGHT_SHAPES`), so ``o3.TensorProduct`` weights can be
reused unchanged. Inputs and outputs stay in mul_ir layout: no method converts layouts.

Execution methods (``TensorProduct(..., backend="cg", method=...)``), one module each:

* ``"sparse"`` (:mod:`.sparse`) — one numba kernel over a flat list of terms (nonzero CG entry
  x channel combination), parallel over samples, no intermediate tensor; the backward pass
  computes the three input gradients in one fused pass. Fits modes whose channel combinations
  per path are few: ``uvu``, ``uvv``, ``uuu``. CPU only.
* ``"grouped"`` (:mod:`.grouped`) — pure torch: paths with the same mode and multiplicities
  stacked, one ``einsum`` per group, one ``index_add`` into the output. Fits channel-mixing
  modes (``uvw``, ``uuw``); runs on any device and compiles with ``fullgraph=True``.
* ``"dense"`` (:mod:`.dense`) — shared weights only: the product is one fixed bilinear map,
  assembled as ``M(w) [dim1 * dim2, dim_out]`` and applied as one GEMM to ``x1 ⊗ x2``. Pure
  torch, any device. Fits small multiplicities (Xie et al.'s SISO/SIMO/MIMO settings).
* ``"channelwise"`` (:mod:`.channelwise`) — every instruction ``uvu`` with a multiplicity-1
  second input (MACE's convolution, ``x1 ⊗ Y(edge)``): per sample and path the CG block is
  contracted with ``x2`` first, then one small mat-vec per channel. It also runs
  ``message_passing`` fused (gather at senders, product, sum at receivers) without forming
  per-edge messages. CPU only.
* ``"naive"`` (:mod:`.naive`) — the reference: one ``einsum`` per path. Used by the tests.
* ``"auto"`` (default) — chosen by :func:`~.planner.plan` (the only place a method is chosen):
  ``dense`` for shared (or no) weights when ``M`` has at most
  :data:`~.planner.DENSE_MAX_ENTRIES` entries; else on the CPU ``channelwise`` when every
  instruction fits it, otherwise ``sparse`` for paths with at most
  :data:`~.planner.SPARSE_MAX_CHANNEL_COMBOS` channel combinations and ``grouped`` for the
  rest (``sparse+grouped``); off the CPU (CUDA, meta) ``grouped``. ``sparse`` and
  ``channelwise`` asked for explicitly raise off the CPU instead of being replaced.

``tp.impl.method`` names the method that runs on the module's device with per-sample weights
(never ``"auto"``), ``tp.impl.method_for(device, shared)`` for any device and weights, and
``tp.impl.executor_for(device, shared)`` is the executor itself.

The numba kernels are ``torch.library`` custom ops (``equitensor::cg_sparse_*``,
``equitensor::cg_channelwise_*``, see :mod:`..multilinear`) with fake implementations and
registered autograd: ``torch.compile(fullgraph=True)`` traces through them, double backward
included. Every method is differentiable to any order. All CG tables are float64 masters
(``add_table``), so ``.double()`` is exact.
"""

from .backend import CGBackend
from .planner import DENSE_MAX_ENTRIES, METHODS, SPARSE_MAX_CHANNEL_COMBOS, choose_method, plan

__all__ = ["CGBackend", "DENSE_MAX_ENTRIES", "METHODS", "SPARSE_MAX_CHANNEL_COMBOS", "choose_method", "plan"]
