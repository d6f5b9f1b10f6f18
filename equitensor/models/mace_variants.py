"""Interaction-block variants of mace-torch that equitensor's MACE can use (``from_mace`` needs them)."""

from __future__ import annotations

import torch

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

    def message_divisor(self, edge_feats, edge_index, num_nodes: int) -> torch.Tensor:
        edge_density = torch.tanh(self.density_fn(edge_feats) ** 2)  # [n_edges, 1]
        density = edge_density.new_zeros(num_nodes, 1).index_add(0, edge_index[1], edge_density)
        return density + 1.0  # [N, 1]


def interaction_block_class(density_normalization: bool = False, nonlinear_interactions: bool = False) -> type:
    """The interaction-block class of a ``MACE`` with these options (the same class in every layer)."""
    if density_normalization and nonlinear_interactions:
        raise ValueError(
            "density_normalization and nonlinear_interactions are exclusive: the non-linear block "
            "has its own learned density normalisation; set one of them"
        )
    if nonlinear_interactions:
        return NonLinearInteractionBlock
    return DensityInteractionBlock if density_normalization else InteractionBlock
