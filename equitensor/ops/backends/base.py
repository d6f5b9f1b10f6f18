"""The contract every tensor-product backend implements."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from e3nn import o3

from ..descriptor import TensorProductDescriptor


class Path(NamedTuple):
    """A coupling ``ir_in1 x ir_in2 -> ir_out`` realised by a backend, plus the block indices."""

    ir_in1: o3.Irrep
    ir_in2: o3.Irrep
    ir_out: o3.Irrep
    i_in1: int
    i_in2: int
    i_out: int


class ConstantTables:
    """float64 constants built at construction (CG blocks, grids, ...), handed out per dtype/device.

    Tables are not buffers: casting the module to float32 and back must not round them, so each
    dtype/device gets its own copy, made from the float64 master on first use and cached.
    """

    def _init_tables(self) -> None:
        self._tables: dict[str, np.ndarray] = {}
        self._table_cache: dict[tuple, torch.Tensor] = {}

    def add_table(self, name: str, array: np.ndarray) -> None:
        """Keep a float64 constant (an own, C-contiguous copy)."""
        self._tables[name] = np.array(array, dtype=np.float64, order="C")

    def master(self, name: str) -> np.ndarray:
        """The float64 master of the constant ``name`` (to build other tables from; do not modify)."""
        return self._tables[name]

    def table(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The constant ``name`` in ``like``'s dtype and device (cached)."""
        key = (name, like.dtype, like.device)
        cached = self._table_cache.get(key)
        if cached is None:
            cached = torch.as_tensor(self._tables[name], dtype=like.dtype, device=like.device)
            self._table_cache[key] = cached
        return cached


class TensorProductBackend(ConstantTables, torch.nn.Module):
    """Executes a :class:`TensorProductDescriptor`.

    Subclasses set ``weight_numel`` and ``paths`` at construction (building every table then)
    and implement :meth:`forward`. ``TensorProduct`` has already validated and flattened the
    inputs, so a backend sees:

    * ``x1``: ``[Z, irreps_in1.dim]``, ``x2``: ``[Z, irreps_in2.dim]`` (mul_ir layout, same dtype);
    * ``weight``: ``[Z, weight_numel]`` (per sample), ``[weight_numel]`` (shared) or ``None``
      when ``weight_numel == 0``;

    and returns ``[Z, irreps_out.dim]`` in mul_ir layout. It must be differentiable twice
    (forces are trained by differentiating through it).
    """

    #: weights per sample / shared set, in this backend's own layout (see its docstring).
    weight_numel: int
    #: the couplings this backend actually realises.
    paths: tuple[Path, ...]

    # Capabilities, read by the contract tests, ``equitensor.expressivity``, the benchmarks and
    # backend conversion instead of lists of backend names. Subclasses override what differs.

    #: how the weights parameterise the map: ``"per_path"`` (one free block per instruction in
    #: e3nn's flat layout, as ``o3.TensorProduct``) or ``"per_degree"`` (channel weights per input
    #: and output block, factorised as in the Gaunt / CP products).
    parameterization: str = "per_path"
    #: connection modes the backend executes (others raise at construction).
    supported_modes: tuple[str, ...] = ("uvw", "uvu", "uvv", "uuw", "uuu")
    #: whether couplings with ``l1 + l2 + l3`` odd (e.g. ``1o x 1o -> 1e``) are realised.
    realises_odd_paths: bool = True
    #: whether the backend computes its map exactly at its default options (``cp`` approximates
    #: it at a finite rank; its ``analysis_options`` make it exact).
    exact: bool = True
    #: constructor options that make the backend exact and differentiable in forward mode
    #: (``torch.func.jacfwd``), for analyses such as the expressivity tables.
    analysis_options: dict = {}

    def __init__(self, descriptor: TensorProductDescriptor):
        super().__init__()
        self.descriptor = descriptor
        self._init_tables()

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def message_passing(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        weight: torch.Tensor | None,
        sender: torch.Tensor,
        receiver: torch.Tensor,
    ) -> torch.Tensor:
        """``out[n] = sum_{e: receiver[e] = n} forward(x1[sender[e]], x2[e], weight[e])``.

        ``x1 [N, irreps_in1.dim]`` (node features), ``x2 [n_edges, irreps_in2.dim]``, ``weight
        [n_edges, weight_numel]``, ``[weight_numel]`` or ``None``, ``sender``/``receiver``
        ``[n_edges]`` int64 in ``[0, N)`` (validated by ``TensorProduct``) -> ``[N, irreps_out.dim]``.
        This default forms the per-edge messages; a backend may fuse the three steps.
        """
        messages = self(x1[sender], x2, weight)
        return messages.new_zeros(x1.shape[0], messages.shape[1]).index_add(0, receiver, messages)

    def extra_repr(self) -> str:
        d = self.descriptor
        return f"{d.irreps_in1} x {d.irreps_in2} -> {d.irreps_out}, paths={len(self.paths)}, weight_numel={self.weight_numel}"


def instruction_paths(descriptor: TensorProductDescriptor) -> tuple[Path, ...]:
    """One :class:`Path` per instruction of the descriptor (what an exact CG product realises)."""
    return tuple(
        Path(*descriptor.path_irreps(ins), ins.i_in1, ins.i_in2, ins.i_out) for ins in descriptor.instructions
    )


class ProductBasisBackend(ConstantTables, torch.nn.Module):
    """Many-body product basis (MACE's symmetric contraction and its Gaunt / CP counterparts).

    Construction: ``cls(irreps_in, irreps_out, correlation, num_elements, **options)`` where
    ``irreps_in`` has one multiplicity for every block (e.g. ``128x0e+128x1o+128x2e+128x3o``),
    ``irreps_out`` has that same multiplicity (e.g. ``128x0e+128x1o``) and ``correlation`` >= 1
    is the body order minus one (nu in MACE). Weights are element- and channel-dependent.

    Call: ``forward(x [N, irreps_in.dim], element_onehot [N, num_elements]) -> [N, irreps_out.dim]``
    (mul_ir layout). The result is a polynomial of degree <= ``correlation`` in ``x`` (the sum
    of the products of orders 1..correlation, each with its own weights), equivariant in ``x``.
    Subclasses set ``paths`` (what they realise, for docs and the expressivity tables).
    """

    #: whether the product basis is computed exactly (a CP factorisation approximates it).
    exact: bool = True

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int):
        super().__init__()
        self._init_tables()
        from ...irreps import as_irreps

        self.irreps_in, self.irreps_out = as_irreps(irreps_in), as_irreps(irreps_out)
        muls = {mul for mul, _ in self.irreps_in} | {mul for mul, _ in self.irreps_out}
        if len(muls) != 1:
            raise ValueError(
                f"product basis needs one multiplicity for all blocks, got {self.irreps_in} -> {self.irreps_out}"
            )
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        if num_elements < 1:
            raise ValueError(f"num_elements must be >= 1, got {num_elements}")
        self.num_channels = muls.pop()
        self.correlation, self.num_elements = int(correlation), int(num_elements)

    def forward(self, x: torch.Tensor, element_onehot: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
