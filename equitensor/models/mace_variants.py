"""Interaction-block variants of mace-torch that equitensor's MACE can use (``from_mace`` needs them)."""

from __future__ import annotations

import torch
from e3nn import o3

from ..irreps import Irreps, as_irreps
from .attention_interaction import AttentionInteractionBlock
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


#: the interaction blocks a layer can use besides the default (mace-torch class in the docstrings)
INTERACTION_BLOCKS = {"nonlinear": NonLinearInteractionBlock, "attention": AttentionInteractionBlock}


def interaction_block_classes(
    num_interactions: int, density_normalization: bool = False, interaction_blocks=None
) -> list[type]:
    """The interaction-block class of each layer of a ``MACE`` with these options.

    ``interaction_blocks``: ``None`` or ``"default"`` (:class:`InteractionBlock`, or
    :class:`DensityInteractionBlock` with ``density_normalization``), a name of
    :data:`INTERACTION_BLOCKS` for every layer, or one name per layer, e.g.
    ``["default", "nonlinear"]`` for mace-torch's ``interaction_first=RealAgnosticResidualInteractionBlock``
    followed by ``RealAgnosticResidualNonLinearInteractionBlock``.
    """
    names = interaction_blocks or "default"
    names = [names] * num_interactions if isinstance(names, str) else list(names)
    known = ["default", *INTERACTION_BLOCKS]
    if len(names) != num_interactions or any(name not in known for name in names):
        raise ValueError(
            f"interaction_blocks needs one of {known} or one per interaction ({num_interactions}), "
            f"got {interaction_blocks!r}"
        )
    if density_normalization and any(name != "default" for name in names):
        raise ValueError(
            f"density_normalization applies to the default interaction block only, got {names}: the "
            "non-linear block has its own learned density normalisation; drop one of the two options"
        )
    default = DensityInteractionBlock if density_normalization else InteractionBlock
    return [INTERACTION_BLOCKS.get(name, default) for name in names]


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
