"""MACE's physics blocks: embeddings, interaction (message passing), product basis, readouts.

Each block mirrors the mace-torch block of the same role (names in the docstrings) with the
same parameters and normalisations, so mace-torch weights port; the tensor products run on the
backends chosen at construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from e3nn.math import normalize2mom

from ..irreps import Irreps, as_irreps, check_last_dim
from ..ops import ChannelwiseTensorProduct, Linear, ProductBasis
from .radial import RadialMLP


#: without host counts, up to this many elements every atom runs through all elements' maps in
#: one GEMM (E times the flops) and keeps its own; beyond it, each atom gathers its element's
#: ``[U, W]`` weights for a batched mat-vec. Both costs grow with the atoms, only the GEMM's with
#: the elements. Alone (``benchmarks/element_linear.py``) the GEMM form is the faster one well past
#: this bound on a CPU, but in a compiled MACE training step with more elements its extra GEMM
#: work was not repaid (``benchmarks/compile_speed.py``), so the bound stays where both agree.
DENSE_ELEMENTS_MAX = 8


class ElementGroups(NamedTuple):
    """Atoms grouped by element, for element-dependent maps (:class:`ElementLinear`).

    ``index [N]``: each atom's element (``0..num_elements-1``). With host ``counts`` (atoms per
    element, ``num_elements`` ints), ``order [N]`` (atom indices sorted by element, stable) and
    its inverse permutation ``inverse [N]``, each element's atoms run through one GEMM; without
    them (:meth:`without_counts`, no host read, the form ``torch.compile`` traces with dynamic
    shapes) every atom takes its element's weights by a gather.
    """

    order: torch.Tensor | None
    inverse: torch.Tensor | None
    counts: list[int] | None
    index: torch.Tensor | None = None

    @classmethod
    def from_index(cls, element_index: torch.Tensor, num_elements: int, counts: list[int] | None = None) -> ElementGroups:
        """Sorted groups of ``element_index [N]``; reads the counts to the host unless given
        (``counts[e]`` = atoms of element ``e``)."""
        order = torch.argsort(element_index, stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        if counts is None:
            counts = torch.bincount(element_index, minlength=num_elements).tolist()
        return cls(order, inverse, list(counts), element_index)

    @classmethod
    def without_counts(cls, element_index: torch.Tensor) -> ElementGroups:
        """Per-atom weight gather over ``element_index [N]`` (no sort, no host read)."""
        return cls(None, None, None, element_index)


class ElementLinear(torch.nn.Module):
    """Element-dependent linear map: e3nn's ``FullyConnectedTensorProduct(irreps_in, Ex0e, irreps_out)``.

    With ``a`` the element one-hot, ``out[w] = sum_{u,v} x[u] a[v] W[u, v, w] / sqrt(fan_in)`` for
    every pair of equal input/output irreps (``fan_in`` = sum over the paths into the output of
    ``mul_in * num_elements``). ``weight`` is e3nn's flat layout (paths in e3nn's order, each
    ``[mul_in, num_elements, mul_out]`` row-major), which is MACE's ``skip_tp``.

    Shapes: ``x [N, irreps_in.dim], element_onehot [N, num_elements] -> [N, irreps_out.dim]``.
    With ``groups`` (:class:`ElementGroups` of the same atoms, ``element_onehot`` then being
    their exact one-hot) the element sum is a selection, ``num_elements`` times fewer flops than
    the formula and no ``[N, mul * num_elements, dim]`` intermediate (for OC20's ~56 elements,
    megabytes instead of gigabytes): with host counts one GEMM per element on the sorted atoms;
    without (no host read; compile-friendly), one GEMM through every element's map and a
    selection when there are at most :data:`DENSE_ELEMENTS_MAX` elements, else a batched mat-vec
    per atom against its element's gathered weights ``[N, U, W]``. Without ``groups``, the
    general formula (any ``a``, e.g. soft attributes).
    """

    def __init__(self, irreps_in, num_elements: int, irreps_out):
        super().__init__()
        self.irreps_in, self.irreps_out = as_irreps(irreps_in), as_irreps(irreps_out)
        self.num_elements = int(num_elements)
        paths = [
            (i, o)
            for i, (_, ir_in) in enumerate(self.irreps_in)
            for o, (_, ir_out) in enumerate(self.irreps_out)
            if ir_in == ir_out
        ]
        sizes = [self.irreps_in[i].mul * self.num_elements * self.irreps_out[o].mul for i, o in paths]
        self.weight = torch.nn.Parameter(torch.randn(sum(sizes)))
        # plain ints for forward (traced code must not touch e3nn's Irrep objects)
        self._dim_in = self.irreps_in.dim
        self._block_sizes = [mul * ir.dim for mul, ir in self.irreps_in]
        starts = [0] + list(torch.tensor(sizes).cumsum(0).tolist()) if sizes else [0]
        self._plan = []  # per output block: (mul_out, dim, [(input block, mul_in, weight range)], fan_in)
        for o, (mul_out, ir) in enumerate(self.irreps_out):
            sources = [
                (i, self.irreps_in[i].mul, (starts[k], starts[k + 1]))
                for k, (i, oo) in enumerate(paths)
                if oo == o
            ]
            fan_in = sum(mul for _, mul, _ in sources) * self.num_elements
            self._plan.append((mul_out, ir.dim, sources, fan_in))

    def forward(
        self, x: torch.Tensor, element_onehot: torch.Tensor, groups: ElementGroups | None = None
    ) -> torch.Tensor:
        check_last_dim(x, self.irreps_in, "x", self._dim_in)
        n, e = x.shape[0], self.num_elements
        sorted_groups = groups is not None and groups.counts is not None
        if sorted_groups:
            x = x.index_select(0, groups.order)  # atoms sorted by element
        blocks = torch.split(x, self._block_sizes, dim=1)
        outputs = []
        for mul_out, dim, sources, fan_in in self._plan:
            if not sources:
                outputs.append(x.new_zeros(n, mul_out * dim))
                continue
            xs = torch.cat([blocks[i].reshape(n, mul, dim) for i, mul, _ in sources], dim=1)  # [N, U, dim]
            w = torch.cat(
                [self.weight[a:b].reshape(mul * e, mul_out) for _, mul, (a, b) in sources]
            ) / math.sqrt(fan_in)  # [U*E, W], rows (u, element)
            if groups is None:
                xa = (xs[:, :, None, :] * element_onehot[:, None, :, None]).reshape(n, -1, dim)  # [N, U*E, dim]
                y = xa.transpose(1, 2) @ w  # [N, dim, W]
            elif sorted_groups:
                w = w.reshape(-1, e, mul_out)  # [U, E, W]
                segments = torch.split(xs.transpose(1, 2), groups.counts)  # per element [n_e, dim, U]
                y = torch.cat([segment @ w[:, k] for k, segment in enumerate(segments)])  # [N, dim, W]
            elif e <= DENSE_ELEMENTS_MAX:  # every element's map, then each atom's own
                y = (xs.transpose(1, 2) @ w.reshape(-1, e * mul_out)).view(n, dim, e, mul_out)  # [N, dim, E, W]
                pick = groups.index.view(n, 1, 1, 1).expand(n, dim, 1, mul_out)
                y = y.gather(2, pick).squeeze(2)  # [N, dim, W]
            else:
                w = w.reshape(-1, e, mul_out).transpose(0, 1)  # [E, U, W]
                y = torch.bmm(xs.transpose(1, 2), w.index_select(0, groups.index))  # [N, dim, W]
            outputs.append(y.transpose(1, 2).reshape(n, mul_out * dim))
        out = torch.cat(outputs, dim=1)
        return out.index_select(0, groups.inverse) if sorted_groups else out

    def extra_repr(self) -> str:
        return f"{self.irreps_in} x {self.num_elements}x0e -> {self.irreps_out}"


class AtomicEnergies(torch.nn.Module):
    """Fixed reference energy per element (E0s, eV): ``element_onehot [N, E] -> [N]``."""

    def __init__(self, atomic_energies: Sequence[float]):
        super().__init__()
        self.register_buffer(
            "atomic_energies", torch.tensor(list(atomic_energies), dtype=torch.get_default_dtype())
        )

    def forward(self, element_onehot: torch.Tensor) -> torch.Tensor:
        return element_onehot @ self.atomic_energies.to(element_onehot.dtype)  # [N]


class ScaleShift(torch.nn.Module):
    """``scale * x + shift`` on the interaction site energies (mace-torch ``ScaleShiftBlock``)."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.get_default_dtype()))
        self.register_buffer("shift", torch.tensor(float(shift), dtype=torch.get_default_dtype()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.shift


class ConvolutionBlock(torch.nn.Module):
    """What every interaction block has: ``linear_up`` (node features -> ``edge_irreps``, by
    default the node features' irreps; mace-torch's option of that name) and the channel-wise
    convolution of its output with the edge harmonics onto ``target_irreps``, on ``conv_backend``.
    Subclasses add the per-edge weight MLP (``num_radial`` inputs), the maps after the
    convolution and the self-connection; these are the constructor arguments of every block.
    """

    def __init__(
        self,
        node_feats_irreps,
        edge_attrs_irreps,
        num_radial: int,
        target_irreps,
        hidden_irreps,
        num_elements: int,
        avg_num_neighbors: float,
        radial_MLP: Sequence[int] = (64, 64, 64),
        residual: bool = True,
        conv_backend: str = "cg",
        edge_irreps=None,
        **conv_options,
    ):
        super().__init__()
        self.node_feats_irreps = as_irreps(node_feats_irreps)
        self.edge_irreps = self.node_feats_irreps if edge_irreps is None else as_irreps(edge_irreps)
        self.target_irreps = as_irreps(target_irreps)
        self.hidden_irreps = as_irreps(hidden_irreps)
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.residual = bool(residual)
        self.num_radial, self.num_elements = int(num_radial), int(num_elements)
        self.radial_MLP = [int(h) for h in radial_MLP]
        self.linear_up = Linear(self.node_feats_irreps, self.edge_irreps)
        self.conv_tp = ChannelwiseTensorProduct(
            self.edge_irreps,
            edge_attrs_irreps,
            self.target_irreps,
            backend=conv_backend,
            **conv_options,
        )

    @property
    def irreps_out(self) -> Irreps:
        """Irreps of the message: the target irreps."""
        return self.target_irreps


    def convolve(self, node_feats, edge_attrs, tp_weights, edge_index, edge_cutoff=None):
        """Sum over edges (sender -> receiver) of the product of ``node_feats [N, .]`` with
        ``edge_attrs``, weighted by ``tp_weights [n_edges, weight_numel]`` (scaled by ``edge_cutoff
        [n_edges, 1]`` when given); fused where the backend can. ``[N, irreps_mid.dim]``; the model
        validated ``edge_index`` (``MACE.check_inputs``)."""
        if edge_cutoff is not None:
            tp_weights = tp_weights * edge_cutoff
        return self.conv_tp.message_passing(node_feats, edge_attrs, tp_weights, edge_index, check_index=False)


class InteractionBlock(ConvolutionBlock):
    """One message-passing step (mace-torch ``RealAgnosticInteractionBlock`` / ``...Residual...``).

    ``h -> linear_up -> conv (channel-wise TP of h[sender] with the edge harmonics, per-edge
    weights from the radial MLP) -> sum over senders at each receiver -> linear -> / avg_num_neighbors``.

    The element-dependent self-connection is applied to the message (``residual=False``, MACE's
    first layer) or returned separately from the incoming features (``residual=True``) and added
    after the product basis. Constructor arguments: :class:`ConvolutionBlock`'s.

    Shapes: ``node_feats [N, node_feats_irreps.dim], element_onehot [N, E], edge_attrs
    [n_edges, sh.dim], edge_feats [n_edges, num_radial], edge_index [2, n_edges]`` ->
    ``(message [N, target_irreps.dim], self_connection [N, hidden_irreps.dim] or None)``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_tp_weights = RadialMLP([self.num_radial, *self.radial_MLP, self.conv_tp.weight_numel])
        self.linear = Linear(self.conv_tp.irreps_out, self.target_irreps)
        if self.residual:
            self.skip = ElementLinear(self.node_feats_irreps, self.num_elements, self.hidden_irreps)
        else:
            self.skip = ElementLinear(self.target_irreps, self.num_elements, self.target_irreps)

    def message_divisor(self, edge_feats, edge_index, num_nodes: int, edge_cutoff=None):
        """What the summed messages are divided by: ``avg_num_neighbors`` (subclasses: per node)."""
        return self.avg_num_neighbors

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
        """``element_groups``: optional :class:`ElementGroups` of the atoms (faster skip connection).
        ``edge_cutoff [n_edges, 1]``: scales the radial MLP's output (``edge_feats`` then lack it)."""
        sc = self.skip(node_feats, element_onehot, element_groups) if self.residual else None
        node_feats = self.linear_up(node_feats)
        tp_weights = self.conv_tp_weights(edge_feats)  # [n_edges, weight_numel]
        message = self.convolve(node_feats, edge_attrs, tp_weights, edge_index, edge_cutoff)
        divisor = self.message_divisor(edge_feats, edge_index, node_feats.shape[0], edge_cutoff)
        message = self.linear(message) / divisor
        if not self.residual:
            message = self.skip(message, element_onehot, element_groups)
        return message, sc


class ProductBlock(torch.nn.Module):
    """Many-body product basis then a linear map (mace-torch ``EquivariantProductBasisBlock``).

    Shapes: ``node_feats [N, irreps_in.dim], sc [N, irreps_out.dim] or None, element_onehot [N, E]
    -> [N, irreps_out.dim]``.
    """

    def __init__(
        self,
        irreps_in,
        irreps_out,
        correlation: int,
        num_elements: int,
        backend: str = "cg",
        element_agnostic: bool = False,
        **options,
    ):
        super().__init__()
        # element_agnostic: one set of weights for every element (mace-torch's use_agnostic_product)
        self.element_agnostic = bool(element_agnostic)
        weight_sets = 1 if element_agnostic else num_elements
        self.product = ProductBasis(
            irreps_in, irreps_out, correlation, weight_sets, backend=backend, **options
        )
        self.linear = Linear(irreps_out, irreps_out)
        self.irreps_out = as_irreps(irreps_out)

    def forward(self, node_feats, sc, element_onehot):
        if self.element_agnostic:
            element_onehot = element_onehot.new_ones(element_onehot.shape[0], 1)
        out = self.linear(self.product(node_feats, element_onehot))
        return out if sc is None else out + sc


class LinearReadout(torch.nn.Module):
    """Site energy as a linear function of the scalar features: ``[N, irreps_in.dim] -> [N]``."""

    def __init__(self, irreps_in):
        super().__init__()
        self.linear = Linear(irreps_in, "0e")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)[:, 0]


class NonLinearReadout(torch.nn.Module):
    """Site energy through a one-hidden-layer MLP on the scalars (``MLP_irreps``, silu): ``[N, dim] -> [N]``."""

    def __init__(self, irreps_in, MLP_irreps="16x0e", act=torch.nn.functional.silu):
        super().__init__()
        MLP_irreps = as_irreps(MLP_irreps)
        if any(ir.l != 0 or ir.p != 1 for _, ir in MLP_irreps):
            raise ValueError(f"MLP_irreps must be even scalars such as '16x0e', got {MLP_irreps}")
        self.linear_1 = Linear(irreps_in, MLP_irreps)
        self.act = normalize2mom(act)
        self.linear_2 = Linear(MLP_irreps, "0e")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))[:, 0]
