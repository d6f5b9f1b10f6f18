"""mace-torch's ``RealAgnosticAttResidualInteractionBlock`` on equitensor's backends.

The radial MLP also sees a learned scalar summary of the sender's and the receiver's features,
so each edge's convolution weights depend on both atoms ("attention" in mace-torch's naming;
there is no softmax). Every map is an equitensor module (``Linear``, ``RadialMLP``, the
channel-wise convolution on any conv backend).
"""

from __future__ import annotations

import torch

from ..irreps import Irreps
from ..ops import Linear
from .blocks import ConvolutionBlock
from .radial import RadialMLP

#: scalars per atom that the edge weights see (fixed in mace-torch's block)
NODE_SUMMARY_IRREPS = Irreps("64x0e")
#: hidden layers of the edge-weight MLP (fixed in mace-torch's block: ``radial_MLP`` is not used)
EDGE_MLP_HIDDEN = (256, 256, 256)


class AttentionInteractionBlock(ConvolutionBlock):
    """One residual message-passing step with node-dependent edge weights (mace-torch
    ``RealAgnosticAttResidualInteractionBlock``).

    With ``d = linear_down(h)`` (``64x0e``) and ``u = linear_up(h)``::

        message_i = linear(sum_{j -> i} conv(u_j, Y_ij; conv_tp_weights([edge_feats_ij, d_j, d_i])))
                    / avg_num_neighbors

    ``conv_tp_weights`` is a :class:`~equitensor.models.radial.RadialMLP` with three hidden layers
    of 256. The self-connection is an element-independent ``Linear(node_feats_irreps,
    hidden_irreps)`` of the incoming features, returned for the product block (always residual).

    Constructor arguments: :class:`~equitensor.models.blocks.ConvolutionBlock`'s (``residual``
    must be true; ``radial_MLP`` is not used, as in mace-torch); shapes as
    :class:`~equitensor.models.blocks.InteractionBlock`. The convolution runs on any ``conv_backend``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.residual:
            raise ValueError(
                "the attention interaction block always has its linear self-connection: build the MACE "
                "with residual_first=True when it is the first block (mace-torch's is a residual one)"
            )
        self.linear_down = Linear(self.node_feats_irreps, NODE_SUMMARY_IRREPS)
        edge_inputs = self.num_radial + 2 * NODE_SUMMARY_IRREPS.dim
        self.conv_tp_weights = RadialMLP([edge_inputs, *EDGE_MLP_HIDDEN, self.conv_tp.weight_numel])
        self.linear = Linear(self.conv_tp.irreps_out, self.target_irreps)
        self.skip = Linear(self.node_feats_irreps, self.hidden_irreps)

    def forward(
        self,
        node_feats,
        element_onehot,
        edge_attrs,
        edge_feats,
        edge_index,
        element_groups=None,
        edge_cutoff=None,
    ):
        """``(message [N, target_irreps.dim], self_connection [N, hidden_irreps.dim])``;
        ``element_onehot`` and ``element_groups`` are accepted for the common interface and not
        needed. ``edge_cutoff [n_edges, 1]``: scales the convolution weights."""
        sc = self.skip(node_feats)
        summary = self.linear_down(node_feats)  # [N, 64]
        node_feats = self.linear_up(node_feats)
        edge_inputs = torch.cat([edge_feats, summary[edge_index[0]], summary[edge_index[1]]], dim=1)
        tp_weights = self.conv_tp_weights(edge_inputs)  # [n_edges, weight_numel]
        message = self.convolve(node_feats, edge_attrs, tp_weights, edge_index, edge_cutoff)
        return self.linear(message) / self.avg_num_neighbors, sc
