"""mace-torch's ``RealAgnosticResidualNonLinearInteractionBlock`` on equitensor's backends.

The interaction of the "non-linear" MACE foundation models: the radial MLP also sees learned
sender and receiver element embeddings, the summed messages are divided by a learned,
affine-normalised neighbour density, a linear residual of the lifted node features is added,
and a gated non-linearity follows. Every map is an equitensor module (``Linear``, the
channel-wise convolution on any conv backend, ``Gate``) or a plain torch layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from e3nn import o3

from ..irreps import Irreps
from ..ops import Gate, Linear
from .blocks import ConvolutionBlock

#: hidden width of the density MLP (fixed in mace-torch's block, not a hyper-parameter there)
DENSITY_MLP_WIDTH = 64


class LayerNormMLP(torch.nn.Module):
    """mace-torch's ``modules.radial.RadialMLP``: ``Linear (with bias) -> LayerNorm -> SiLU`` per
    hidden layer, a plain ``Linear`` last. ``net`` is a ``torch.nn.Sequential`` with mace-torch's
    layer indices, so its state dict copies over by name.

    Shapes: ``[n_edges, hs[0]] -> [n_edges, hs[-1]]``.
    """

    def __init__(self, hs: Sequence[int]):
        super().__init__()
        self.hs = [int(h) for h in hs]
        if len(self.hs) < 2:
            raise ValueError(f"the MLP needs at least input and output sizes, got {self.hs}")
        layers = []
        for i, (h_in, h_out) in enumerate(zip(self.hs, self.hs[1:])):
            layers.append(torch.nn.Linear(h_in, h_out))
            if i < len(self.hs) - 2:
                layers += [torch.nn.LayerNorm(h_out), torch.nn.SiLU()]
        self.net = torch.nn.Sequential(*layers)

    @property
    def last(self) -> torch.nn.Linear:
        """The output layer (its rows are the per-path convolution weights)."""
        return self.net[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NonLinearInteractionBlock(ConvolutionBlock):
    """One non-linear residual message-passing step (mace-torch
    ``RealAgnosticResidualNonLinearInteractionBlock``).

    With ``e_i`` the element one-hot, ``u = linear_up(h)`` and edge inputs
    ``x_ij = [edge_feats_ij, source_embedding(e_j), target_embedding(e_i)]``::

        m_i = linear_1(sum_{j -> i} conv(u_j, Y_ij; conv_tp_weights(x_ij)))
              / (beta * rho_i + alpha) + linear_res(u_i)
        message_i = linear_2(gate(m_i)),     rho_i = sum_{j -> i} tanh(density_fn(x_ij)^2)

    ``gate`` is silu on the scalars and sigmoid gates on the others (both normalised as e3nn
    does); ``alpha``, ``beta`` are learned. The self-connection is an element-independent
    ``Linear(node_feats_irreps, hidden_irreps)`` of the incoming features, returned for the
    product block (always residual; ``avg_num_neighbors`` is not used).

    Constructor arguments: :class:`~equitensor.models.blocks.ConvolutionBlock`'s (``residual``
    must be true); shapes as :class:`~equitensor.models.blocks.InteractionBlock`. The
    convolution runs on any ``conv_backend``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.residual:
            raise ValueError(
                "the non-linear interaction block always has its linear self-connection: build the "
                "MACE with residual_first=True when it is the first block (mace-torch's is a residual one)"
            )
        num_scalars = self.node_feats_irreps.count(o3.Irrep(0, 1))
        scalars, elements = Irreps(f"{num_scalars}x0e"), Irreps(f"{self.num_elements}x0e")
        self.source_embedding = Linear(elements, scalars)
        self.target_embedding = Linear(elements, scalars)
        edge_inputs = self.num_radial + 2 * num_scalars
        self.conv_tp_weights = LayerNormMLP([edge_inputs, *self.radial_MLP, self.conv_tp.weight_numel])
        self.density_fn = LayerNormMLP([edge_inputs, DENSITY_MLP_WIDTH, 1])
        self.skip = Linear(self.node_feats_irreps, self.hidden_irreps)
        self.gate = _target_gate(self.target_irreps)
        # the gate's input as one block per irrep type, mace-torch's layout of the same columns
        gate_in = Irreps(self.gate.irreps_in.simplify())
        self.linear_res = Linear(self.edge_irreps, gate_in)
        self.linear_1 = Linear(self.conv_tp.irreps_out, gate_in)
        self.linear_2 = Linear(self.target_irreps, self.target_irreps)
        self.alpha = torch.nn.Parameter(torch.tensor(20.0))
        self.beta = torch.nn.Parameter(torch.tensor(0.0))

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
        ``element_groups`` is accepted for the common interface and not needed. ``edge_cutoff
        [n_edges, 1]``: scales the convolution weights and edge densities (``edge_feats`` then lack it)."""
        sc = self.skip(node_feats)
        node_feats = self.linear_up(node_feats)
        residual = self.linear_res(node_feats)
        sender, receiver = edge_index[0], edge_index[1]
        edge_inputs = torch.cat(
            [
                edge_feats,
                self.source_embedding(element_onehot)[sender],
                self.target_embedding(element_onehot)[receiver],
            ],
            dim=1,
        )  # [n_edges, num_radial + 2 * num_scalars]
        tp_weights = self.conv_tp_weights(edge_inputs)  # [n_edges, weight_numel]
        edge_density = torch.tanh(self.density_fn(edge_inputs) ** 2)  # [n_edges, 1]
        if edge_cutoff is not None:
            edge_density = edge_density * edge_cutoff
        density = edge_density.new_zeros(node_feats.shape[0], 1).index_add(0, receiver, edge_density)
        message = self.convolve(node_feats, edge_attrs, tp_weights, edge_index, edge_cutoff)
        message = self.linear_1(message) / (density * self.beta + self.alpha) + residual
        return self.linear_2(self.gate(message)), sc


def _target_gate(target_irreps: Irreps) -> Gate:
    """silu on the ``0e`` blocks, sigmoid gates on the rest (mace-torch's ``GatedEquivariantBlock``)."""
    scalars = Irreps([(mul, ir) for mul, ir in target_irreps if ir.l == 0])
    gated = Irreps([(mul, ir) for mul, ir in target_irreps if ir.l > 0])
    if any(ir != o3.Irrep(0, 1) for _, ir in scalars) or list(target_irreps) != list(scalars + gated):
        raise ValueError(
            f"the non-linear interaction block needs target irreps of 0e scalars first, then the "
            f"gated irreps, got {target_irreps}"
        )
    return Gate(scalars, gated, act_scalars=torch.nn.functional.silu, act_gates=torch.sigmoid)
