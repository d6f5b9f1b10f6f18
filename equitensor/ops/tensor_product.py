"""``TensorProduct``: one interface, interchangeable backends (``backend="cg" | "e3nn" | ...``)."""

from __future__ import annotations

import torch

from ..irreps import Irreps, as_irreps, check_last_dim
from .backends.registry import get_backend
from .descriptor import build_descriptor, full_instructions


class TensorProduct(torch.nn.Module):
    """Bilinear equivariant map ``irreps_in1 x irreps_in2 -> irreps_out`` (e3nn-compatible).

    Args:
        irreps_in1, irreps_in2, irreps_out: irreps (strings in e3nn syntax or ``Irreps``).
        instructions: ``(i_in1, i_in2, i_out, mode, has_weight[, path_weight])`` tuples, as in
            ``e3nn.o3.TensorProduct``. Omit them and pass ``mode=`` to take every allowed path.
        mode: connection mode for the generated instructions (``uvw``, ``uvu``, ``uvv``, ``uuw``, ``uuu``).
        irrep_normalization: ``"component"`` | ``"norm"`` | ``"none"`` (e3nn's meaning).
        path_normalization: ``"element"`` | ``"path"`` | ``"none"`` (e3nn's meaning).
        internal_weights: hold the weights as a parameter (default: when ``shared_weights``).
        shared_weights: one weight set for the batch (default ``True``); ``False`` means the
            caller passes ``[..., weight_numel]`` weights per sample (e.g. per edge).
        backend: a name from :func:`~equitensor.ops.backends.registry.available_backends`.
        **backend_options: passed to the backend (e.g. ``rank=`` for ``cp``).

    Call ``tp(x1, x2, weight=None)`` with ``x1 [..., irreps_in1.dim]`` and ``x2
    [..., irreps_in2.dim]`` (batch dimensions broadcast) to get ``[..., irreps_out.dim]``.
    ``weight_numel`` and the weight layout are the backend's (``cg`` and ``e3nn``: e3nn's flat
    layout); ``paths`` lists the couplings the backend realises.
    """

    def __init__(
        self,
        irreps_in1,
        irreps_in2,
        irreps_out,
        instructions=None,
        *,
        mode: str | None = None,
        irrep_normalization: str = "component",
        path_normalization: str = "element",
        internal_weights: bool | None = None,
        shared_weights: bool | None = None,
        backend: str = "cg",
        **backend_options,
    ):
        super().__init__()
        irreps_in1, irreps_in2, irreps_out = map(as_irreps, (irreps_in1, irreps_in2, irreps_out))
        if instructions is None:
            if mode is None:
                raise ValueError(
                    "pass either instructions=[(i_in1, i_in2, i_out, mode, has_weight), ...] or mode="
                )
            instructions = full_instructions(irreps_in1, irreps_in2, irreps_out, mode)
        elif mode is not None:
            raise ValueError("pass instructions or mode, not both")
        backend_cls = get_backend(backend)
        self.descriptor = build_descriptor(
            irreps_in1, irreps_in2, irreps_out, instructions, irrep_normalization, path_normalization
        )
        self.backend_name = backend
        self.impl = backend_cls(self.descriptor, **backend_options)
        # plain ints for forward (traced code must not touch e3nn's Irrep objects)
        self._dim_in1, self._dim_in2, self._dim_out = irreps_in1.dim, irreps_in2.dim, irreps_out.dim

        if shared_weights is False and internal_weights:
            raise ValueError("internal_weights=True requires shared_weights=True")
        self.shared_weights = True if shared_weights is None else bool(shared_weights)
        if internal_weights is None:
            internal_weights = self.shared_weights and self.weight_numel > 0
        self.internal_weights = bool(internal_weights)
        if self.internal_weights:
            self.weight = torch.nn.Parameter(torch.randn(self.weight_numel))
        else:
            self.register_parameter("weight", None)

    @property
    def irreps_in1(self) -> Irreps:
        return self.descriptor.irreps_in1

    @property
    def irreps_in2(self) -> Irreps:
        return self.descriptor.irreps_in2

    @property
    def irreps_out(self) -> Irreps:
        return self.descriptor.irreps_out

    @property
    def instructions(self):
        return self.descriptor.instructions

    @property
    def weight_numel(self) -> int:
        return self.impl.weight_numel

    @property
    def paths(self):
        return self.impl.paths

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        check_last_dim(x1, self.irreps_in1, "x1", self._dim_in1)
        check_last_dim(x2, self.irreps_in2, "x2", self._dim_in2)
        batch = torch.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
        weight = self._resolve_weight(weight, batch)
        x1 = x1.expand(*batch, x1.shape[-1]).reshape(-1, x1.shape[-1])
        x2 = x2.expand(*batch, x2.shape[-1]).reshape(-1, x2.shape[-1])
        if weight is not None and weight.ndim > 1:
            weight = weight.expand(*batch, self.weight_numel).reshape(-1, self.weight_numel)
        out = self.impl(x1, x2, weight)
        return out.reshape(*batch, self._dim_out)

    def message_passing(
        self,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        weight: torch.Tensor | None,
        edge_index: torch.Tensor,
        check_index: bool = True,
    ) -> torch.Tensor:
        """Product on every edge, summed at its receiver (a graph convolution).

        ``out[n] = sum over edges e = (s -> n) of tp(node_feats[s], edge_attrs[e], weight[e])``
        with ``node_feats [N, irreps_in1.dim]``, ``edge_attrs [n_edges, irreps_in2.dim]``,
        ``weight [n_edges, weight_numel]`` (per edge) or the shared/internal weights, and
        ``edge_index [2, n_edges]`` (row 0 sender, row 1 receiver, torch-geometric's
        convention) -> ``[N, irreps_out.dim]``. Equal to gathering, calling the product and
        summing with ``index_add``; backends that can (``cg`` on MACE's convolution) do it in one
        fused pass without forming the ``[n_edges, irreps_out.dim]`` messages.

        ``check_index=True`` checks that ``edge_index`` points at rows of ``node_feats``, which
        reads its range to the host; it is skipped under ``torch.compile`` and by callers that
        validated the graph already (``MACE`` does, in ``check_inputs``).
        """
        check_last_dim(node_feats, self.irreps_in1, "node_feats", self._dim_in1)
        check_last_dim(edge_attrs, self.irreps_in2, "edge_attrs", self._dim_in2)
        if node_feats.ndim != 2 or edge_attrs.ndim != 2:
            raise ValueError(
                f"message_passing expects node_feats [N, {self.irreps_in1.dim}] and edge_attrs "
                f"[n_edges, {self.irreps_in2.dim}], got {tuple(node_feats.shape)} and {tuple(edge_attrs.shape)}"
            )
        n_nodes, n_edges = node_feats.shape[0], edge_attrs.shape[0]
        if edge_index.ndim != 2 or edge_index.shape != (2, n_edges):
            raise ValueError(
                f"edge_index must have shape [2, n_edges] = [2, {n_edges}] (one column per row of "
                f"edge_attrs), got {tuple(edge_index.shape)}"
            )
        if edge_index.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"edge_index must hold integers, got {edge_index.dtype}")
        if check_index and n_edges and not torch.compiler.is_compiling():
            low, high = (int(v) for v in torch.aminmax(edge_index))
            if low < 0 or high >= n_nodes:
                raise ValueError(
                    f"edge_index refers to nodes outside [0, {n_nodes}) (range {low}..{high}); it must "
                    "index rows of node_feats"
                )
        weight = self._resolve_weight(weight, (n_edges,))
        if weight is not None and weight.ndim > 1:
            if weight.ndim != 2:
                raise ValueError(
                    f"per-edge weight must have shape [{n_edges}, {self.weight_numel}], got {tuple(weight.shape)}"
                )
            weight = weight.expand(n_edges, self.weight_numel)
        sender, receiver = edge_index[0].long(), edge_index[1].long()
        return self.impl.message_passing(node_feats, edge_attrs, weight, sender, receiver)

    def _resolve_weight(self, weight, batch):
        if self.internal_weights:
            if weight is not None:
                raise ValueError(
                    "this TensorProduct holds its weights (internal_weights=True); do not pass weight"
                )
            return self.weight
        if self.weight_numel == 0:
            return None
        if weight is None:
            raise ValueError(
                f"weight is required: expected [..., {self.weight_numel}] (backend {self.backend_name!r})"
            )
        if weight.shape[-1:] != (self.weight_numel,):
            raise ValueError(
                f"weight has shape {tuple(weight.shape)}; backend {self.backend_name!r} expects "
                f"[..., {self.weight_numel}] ({'shared' if self.shared_weights else 'one set per sample'})"
            )
        if self.shared_weights and weight.ndim != 1:
            raise ValueError(
                f"shared_weights=True expects weight of shape [{self.weight_numel}], got {tuple(weight.shape)}"
            )
        if not self.shared_weights:
            try:
                torch.broadcast_shapes(weight.shape[:-1], batch)
            except RuntimeError:
                raise ValueError(
                    f"per-sample weight batch shape {tuple(weight.shape[:-1])} does not broadcast with inputs {tuple(batch)}"
                ) from None
        return weight

    def extra_repr(self) -> str:
        return f"backend={self.backend_name!r}, weight_numel={self.weight_numel}"


def FullyConnectedTensorProduct(irreps_in1, irreps_in2, irreps_out, **kwargs) -> TensorProduct:
    """Every allowed path, ``uvw`` mode: each output channel mixes all input channel pairs."""
    return TensorProduct(irreps_in1, irreps_in2, irreps_out, mode="uvw", **kwargs)


def channelwise_instructions(irreps_in1, irreps_in2, target_irreps) -> tuple[Irreps, list[tuple]]:
    """MACE's convolution layout: one ``uvu`` output block per path whose output is in ``target_irreps``.

    Returns the sorted output irreps (the same as mace-torch's ``tp_out_irreps_with_instructions``)
    and the instructions in path order, ``i_out`` pointing into the sorted irreps. mace-torch
    additionally sorts its instructions by ``i_out``, so its per-edge weight columns are a
    permutation of ours (``tests/mace_port.py`` applies it when porting weights).
    """
    irreps_in1, irreps_in2, target = map(as_irreps, (irreps_in1, irreps_in2, target_irreps))
    target_irs = {ir for _, ir in target}
    out_blocks, raw = [], []
    for i1, (mul, ir1) in enumerate(irreps_in1):
        for i2, (_, ir2) in enumerate(irreps_in2):
            for ir_out in ir1 * ir2:
                if ir_out in target_irs:
                    raw.append((i1, i2, len(out_blocks), "uvu", True))
                    out_blocks.append((mul, ir_out))
    irreps_out, permutation, _ = Irreps(out_blocks).sort()
    instructions = [(i1, i2, permutation[io], mode, w) for i1, i2, io, mode, w in raw]
    return Irreps(irreps_out), instructions


def ChannelwiseTensorProduct(irreps_in1, irreps_in2, target_irreps, **kwargs) -> TensorProduct:
    """MACE-style convolution product (``uvu``, one output block per path, per-edge weights by default)."""
    irreps_out, instructions = channelwise_instructions(irreps_in1, irreps_in2, target_irreps)
    kwargs.setdefault("shared_weights", False)
    kwargs.setdefault("internal_weights", False)
    return TensorProduct(irreps_in1, irreps_in2, irreps_out, instructions, **kwargs)
