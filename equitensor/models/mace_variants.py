"""Interaction-block variants of mace-torch that equitensor's MACE can use (``from_mace`` needs them)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from e3nn import o3

from ..irreps import Irreps, as_irreps
from .blocks import InteractionBlock
from .nonlinear_interaction import NonLinearInteractionBlock
from .radial import RadialMLP


class DensityInteractionBlock(InteractionBlock):
    """mace-torch's ``RealAgnosticDensity(Residual)InteractionBlock``: the summed messages are
    divided by ``1 + rho_i`` with the learned neighbour density
    ``rho_i = sum_{j -> i} tanh(MLP(edge_feats_ij)^2)`` (a one-layer MLP without bias) instead of
    ``avg_num_neighbors``. Same shapes and arguments as :class:`InteractionBlock`.
    """

    def __init__(self, node_feats_irreps, edge_attrs_irreps, num_radial: int, *args, **kwargs):
        super().__init__(node_feats_irreps, edge_attrs_irreps, num_radial, *args, **kwargs)
        self.density_fn = RadialMLP([num_radial, 1])

    def message_divisor(self, edge_feats, edge_index, num_nodes: int, edge_cutoff=None) -> torch.Tensor:
        edge_density = torch.tanh(self.density_fn(edge_feats) ** 2)  # [n_edges, 1]
        if edge_cutoff is not None:
            edge_density = edge_density * edge_cutoff
        density = edge_density.new_zeros(num_nodes, 1).index_add(0, edge_index[1], edge_density)
        return density + 1.0  # [N, 1]


class NoReadout(torch.nn.Module):
    """The readout of a layer whose features give no energy (mace-torch's ``use_last_readout_only``):
    ``[N, dim] -> zeros [N]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0])


def interaction_block_classes(
    num_interactions: int,
    density_normalization: bool = False,
    nonlinear_interactions: bool | Sequence[bool] = False,
) -> list[type]:
    """The interaction-block class of each layer of a ``MACE`` with these options.

    ``nonlinear_interactions``: ``True`` (every layer) or one flag per layer, e.g. ``[False, True]``
    for mace-torch's ``interaction_first=RealAgnosticResidualInteractionBlock`` followed by
    ``RealAgnosticResidualNonLinearInteractionBlock``.
    """
    if isinstance(nonlinear_interactions, bool):
        flags = [nonlinear_interactions] * num_interactions
    else:
        flags = [bool(flag) for flag in nonlinear_interactions]
    if len(flags) != num_interactions:
        raise ValueError(
            f"nonlinear_interactions needs True/False or one flag per interaction ({num_interactions}), "
            f"got {nonlinear_interactions}"
        )
    if density_normalization and any(flags):
        raise ValueError(
            "density_normalization and nonlinear_interactions are exclusive: the non-linear block "
            "has its own learned density normalisation; set one of them"
        )
    linear = DensityInteractionBlock if density_normalization else InteractionBlock
    return [NonLinearInteractionBlock if flag else linear for flag in flags]


def layer_edge_irreps(num_interactions: int, edge_irreps=None, edge_irreps_first: bool = False) -> list:
    """The convolution irreps of each layer (``None``: the layer's node features), as mace-torch
    places its ``edge_irreps``: every layer after the first; the first (whose node features are
    scalars) gets their scalars with ``edge_irreps_first`` (mace-torch's ``use_edge_irreps_first``)."""
    if edge_irreps is None:
        if edge_irreps_first:
            raise ValueError("edge_irreps_first=True needs edge_irreps (e.g. '128x0e+128x1o+128x2e')")
        return [None] * num_interactions
    edge_irreps = as_irreps(edge_irreps)
    first = Irreps(f"{edge_irreps.count(o3.Irrep(0, 1))}x0e") if edge_irreps_first else None
    return [first] + [edge_irreps] * (num_interactions - 1)
