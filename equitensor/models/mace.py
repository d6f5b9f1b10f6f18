"""MACE (Batatia et al., NeurIPS 2022) on equitensor's interchangeable tensor-product backends.

Same architecture, hyper-parameter names and defaults as mace-torch 0.3.16's ``ScaleShiftMACE``
with ``RealAgnosticInteractionBlock`` first and ``RealAgnosticResidualInteractionBlock`` after:

    E = sum_i [ E0(z_i) + scale * sum_t readout_t(h_i^(t)) + shift ]

with ``h^(t) = ProductBasis(Interaction(h^(t-1)))``; forces ``-dE/dr`` and stress
``(1/V) dE/d(strain)`` by autograd.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from e3nn import o3

from ..irreps import Irreps, as_irreps, natural_irreps
from ..ops import Linear
from ..ops.backends.registry import get_backend, get_product_basis
from .blocks import (
    AtomicEnergies,
    ElementGroups,
    LinearReadout,
    NonLinearReadout,
    ProductBlock,
    ScaleShift,
)
from .graph import check_graph
from .mace_variants import NoReadout, interaction_block_classes, layer_edge_irreps
from .outputs import GraphTensors, derivatives, edge_vectors, gradient_leaves, graph_tensors, strained, sum_per_graph
from .pair_terms import ZBLRepulsion
from .pair_terms import distance_transform as make_distance_transform
from .radial import RadialEmbedding


def mace_config(
    atomic_numbers: Sequence[int],
    atomic_energies: Sequence[float] | Mapping[int, float] | None,
    r_max: float,
    num_bessel: int,
    num_polynomial_cutoff: int,
    max_ell: int,
    hidden_irreps: str | None,
    num_channels: int | None,
    max_L: int | None,
    correlation: int | Sequence[int],
    num_interactions: int,
    MLP_irreps: str,
    radial_MLP: Sequence[int],
    avg_num_neighbors: float,
    atomic_inter_scale: float,
    atomic_inter_shift: float,
    conv_backend: str,
    product_backend: str,
    conv_options: Mapping | None,
    product_options: Mapping | None,
    **options,
) -> dict:
    """The checked, normalised constructor arguments of :class:`MACE` (its ``config``: plain data,
    ``MACE(**config)`` builds the same model). ``ValueError`` names the first bad argument.

    ``options`` (``residual_first``, ``pair_repulsion``, ``distance_transform``,
    ``density_normalization``, ``interaction_blocks``, ``agnostic_product``, ``edge_irreps``,
    ``edge_irreps_first``, ``last_readout_only``) are recorded only when set, so configs of the default model stay
    as they were.
    """
    atomic_numbers, atomic_energies = _elements_and_e0s(atomic_numbers, atomic_energies)
    hidden_irreps = _hidden_irreps(hidden_irreps, num_channels, max_L)
    num_interactions = int(num_interactions)
    if num_interactions < 1:
        raise ValueError(f"num_interactions must be >= 1, got {num_interactions}")
    correlations = [int(correlation)] * num_interactions if isinstance(correlation, int) else list(correlation)
    if len(correlations) != num_interactions:
        raise ValueError(f"need one correlation per interaction ({num_interactions}), got {correlations}")
    get_backend(conv_backend)  # ValueError listing the known names
    get_product_basis(product_backend)
    num_features = hidden_irreps.count(o3.Irrep(0, 1))
    if num_features == 0 or any(mul != num_features for mul, _ in hidden_irreps):
        raise ValueError(f"hidden_irreps need one multiplicity and a 0e block, got {hidden_irreps}")
    config = dict(
        atomic_numbers=atomic_numbers, atomic_energies=atomic_energies, r_max=float(r_max),
        num_bessel=int(num_bessel), num_polynomial_cutoff=int(num_polynomial_cutoff), max_ell=int(max_ell),
        hidden_irreps=str(hidden_irreps), correlation=correlations, num_interactions=num_interactions,
        MLP_irreps=str(as_irreps(MLP_irreps)), radial_MLP=[int(h) for h in radial_MLP],
        avg_num_neighbors=float(avg_num_neighbors), atomic_inter_scale=float(atomic_inter_scale),
        atomic_inter_shift=float(atomic_inter_shift), conv_backend=conv_backend, product_backend=product_backend,
        conv_options=dict(conv_options or {}), product_options=dict(product_options or {}),
    )  # fmt: skip
    if options.get("edge_irreps") is not None:
        options["edge_irreps"] = str(as_irreps(options["edge_irreps"]))
    config.update({k: v for k, v in options.items() if v not in (False, None, "None")})
    return config


def _elements_and_e0s(
    atomic_numbers: Sequence[int], atomic_energies: Sequence[float] | Mapping[int, float] | None
) -> tuple[list[int], list[float]]:
    """Distinct atomic numbers in 1..118 and one E0 per element (a mapping fills missing ones with 0)."""
    atomic_numbers = [int(z) for z in atomic_numbers]
    if not atomic_numbers or len(set(atomic_numbers)) != len(atomic_numbers):
        raise ValueError(f"atomic_numbers must be a non-empty list of distinct elements, got {atomic_numbers}")
    if any(not 1 <= z <= 118 for z in atomic_numbers):
        raise ValueError(f"atomic_numbers must be in 1..118, got {atomic_numbers}")
    if isinstance(atomic_energies, Mapping):
        return atomic_numbers, [float(atomic_energies.get(z, 0.0)) for z in atomic_numbers]
    if atomic_energies is None:
        return atomic_numbers, [0.0] * len(atomic_numbers)
    atomic_energies = [float(e) for e in atomic_energies]
    if len(atomic_energies) != len(atomic_numbers):
        raise ValueError(f"got {len(atomic_energies)} atomic_energies for {len(atomic_numbers)} atomic_numbers")
    return atomic_numbers, atomic_energies


def _hidden_irreps(hidden_irreps: str | None, num_channels: int | None, max_L: int | None) -> Irreps:
    """``hidden_irreps``, or the natural irreps of ``num_channels`` and ``max_L``, or the default."""
    if hidden_irreps is None:
        if (num_channels is None) != (max_L is None):
            raise ValueError("give both num_channels and max_L, or hidden_irreps")
        return natural_irreps(max_L, num_channels) if num_channels is not None else Irreps("128x0e+128x1o")
    if num_channels is not None or max_L is not None:
        raise ValueError("give either hidden_irreps or num_channels + max_L, not both")
    return as_irreps(hidden_irreps)


#: ``model.*`` training settings passed to the constructor unchanged
_CONSTRUCTOR_SETTINGS = (
    "num_bessel", "num_polynomial_cutoff", "max_ell", "hidden_irreps", "correlation", "num_interactions",
    "MLP_irreps", "radial_MLP", "conv_backend", "product_backend",
)  # fmt: skip


class MACE(torch.nn.Module):
    """MACE interatomic potential (energy in eV, lengths in Å).

    Args:
        atomic_numbers: the elements the model knows (e.g. ``[1, 6, 8]``), in one-hot order.
        atomic_energies: E0 per element (eV): a sequence aligned with ``atomic_numbers`` or a
            ``{Z: E0}`` mapping (missing elements get 0); default zeros.
        r_max: cutoff radius (Å). num_bessel: radial basis size. num_polynomial_cutoff: p.
        max_ell: highest degree of the edge spherical harmonics.
        hidden_irreps: node features, e.g. ``"128x0e+128x1o"``; or give ``num_channels`` and ``max_L``.
        correlation: product-basis order (int or one per interaction).
        num_interactions: message-passing layers.
        MLP_irreps: hidden irreps of the last (non-linear) readout.
        radial_MLP: hidden sizes of the radial MLP.
        avg_num_neighbors: messages are divided by this.
        atomic_inter_scale, atomic_inter_shift: ``scale * E_site + shift`` on interaction energies.
        conv_backend: tensor-product backend of the convolutions (``available_backends()``).
        product_backend: product-basis backend (``available_product_bases()``).
        conv_options, product_options: extra keyword arguments for the backends.
        residual_first: the first interaction has the element skip connection too (mace-torch's
            ``interaction_first=RealAgnosticResidualInteractionBlock``, as in MACE-MP-0).
        pair_repulsion: add ZBL repulsion to the interaction energies (``pair_terms.ZBLRepulsion``).
        distance_transform: ``"Agnesi"`` or ``"Soft"``: the radial basis sees transformed
            lengths (``pair_terms``), the cutoff the true ones (mace-torch's option of that name).
        density_normalization: divide messages by a learned neighbour density instead of
            ``avg_num_neighbors`` (``mace_variants.DensityInteractionBlock``).
        interaction_blocks: ``"nonlinear"`` (mace-torch's
            ``RealAgnosticResidualNonLinearInteractionBlock``) or ``"attention"``
            (``RealAgnosticAttResidualInteractionBlock``) in every layer, or one name per layer
            (``"default"``: the block above); see ``mace_variants.INTERACTION_BLOCKS``.
        agnostic_product: one product-basis weight set for all elements (``use_agnostic_product``).
        edge_irreps, edge_irreps_first: irreps of the convolutions after the first layer, and of the
            first (its scalars) when set (mace-torch's ``edge_irreps``, ``use_edge_irreps_first``).
        apply_cutoff: ``False``: the radial MLPs see the bare radial basis and the polynomial cutoff
            scales their outputs instead (mace-torch's option of that name).
        last_readout_only: only the last layer's features give energies (``use_last_readout_only``).

    ``forward(batch, compute_forces=True, compute_stress=False, training=False, check_inputs=True)``
    returns a dict:
    ``energy [B]``, ``node_energy [N]``, ``forces [N, 3]`` (or None), ``stress [B, 3, 3]`` (eV/Å^3,
    zero for non-periodic graphs) and ``virials [B, 3, 3]`` (``-dE/d(strain)``), both None unless
    ``compute_stress``. ``training=True`` keeps the graph so that a force loss can backpropagate.
    Forces and stress come from :mod:`equitensor.models.outputs`. :meth:`predict` is the same
    computation on prepared tensors, without host reads (what ``compile_model`` compiles).
    Registered as model ``mace`` (:mod:`equitensor.models.registry`); :meth:`for_training` builds
    it from a training configuration.
    """

    #: the ``model.*`` training settings MACE reads besides the common ones (:mod:`.registry`)
    config_keys = _CONSTRUCTOR_SETTINGS + ("avg_num_neighbors", "scale_shift")

    def __init__(
        self,
        atomic_numbers: Sequence[int],
        atomic_energies: Sequence[float] | Mapping[int, float] | None = None,
        r_max: float = 5.0,
        num_bessel: int = 8,
        num_polynomial_cutoff: int = 5,
        max_ell: int = 3,
        hidden_irreps: str | None = None,
        num_channels: int | None = None,
        max_L: int | None = None,
        correlation: int | Sequence[int] = 3,
        num_interactions: int = 2,
        MLP_irreps: str = "16x0e",
        radial_MLP: Sequence[int] = (64, 64, 64),
        avg_num_neighbors: float = 1.0,
        atomic_inter_scale: float = 1.0,
        atomic_inter_shift: float = 0.0,
        conv_backend: str = "cg",
        product_backend: str = "cg",
        conv_options: Mapping | None = None,
        product_options: Mapping | None = None,
        residual_first: bool = False,
        pair_repulsion: bool = False,
        distance_transform: str | None = None,
        density_normalization: bool = False,
        interaction_blocks: str | Sequence[str] | None = None,
        agnostic_product: bool = False,
        edge_irreps: str | None = None,
        edge_irreps_first: bool = False,
        apply_cutoff: bool = True,
        last_readout_only: bool = False,
    ):
        super().__init__()
        self.config = mace_config(
            atomic_numbers=atomic_numbers, atomic_energies=atomic_energies, r_max=r_max, num_bessel=num_bessel,
            num_polynomial_cutoff=num_polynomial_cutoff, max_ell=max_ell, hidden_irreps=hidden_irreps,
            num_channels=num_channels, max_L=max_L, correlation=correlation, num_interactions=num_interactions,
            MLP_irreps=MLP_irreps, radial_MLP=radial_MLP, avg_num_neighbors=avg_num_neighbors,
            atomic_inter_scale=atomic_inter_scale, atomic_inter_shift=atomic_inter_shift,
            conv_backend=conv_backend, product_backend=product_backend, conv_options=conv_options,
            product_options=product_options, residual_first=residual_first, pair_repulsion=pair_repulsion,
            distance_transform=distance_transform, density_normalization=density_normalization,
            interaction_blocks=interaction_blocks, agnostic_product=agnostic_product, edge_irreps=edge_irreps,
            edge_irreps_first=edge_irreps_first, last_readout_only=last_readout_only,
        )  # fmt: skip
        self.apply_cutoff = bool(apply_cutoff)
        if not self.apply_cutoff:  # recorded only when off, as the other options
            self.config["apply_cutoff"] = False
        self._build_embeddings(self.config)
        self._build_layers(self.config)

    @classmethod
    def for_training(cls, settings, statistics) -> MACE:
        """The model of a training run: ``settings`` is the ``model`` section of the configuration
        (:class:`~equitensor.train.config.ModelConfig`), ``statistics`` the training set's
        :class:`~equitensor.train.setup.DatasetStatistics`.

        ``avg_num_neighbors: auto`` takes the training set's mean; with ``scale_shift`` the
        interaction energy per atom is scaled by the rms force and shifted by the mean interaction
        energy per atom, as mace-torch's ScaleShiftMACE does. ``settings.extra`` goes to the
        constructor unchanged.
        """
        avg = settings.avg_num_neighbors
        scale_shift = {}
        if settings.scale_shift:
            scale_shift = {
                "atomic_inter_scale": statistics.rms_forces if statistics.rms_forces > 0 else 1.0,
                "atomic_inter_shift": statistics.mean_interaction_energy_per_atom,
            }
        return cls(
            atomic_numbers=statistics.elements,
            atomic_energies=[statistics.atomic_energies[z] for z in statistics.elements],
            r_max=settings.r_max,
            avg_num_neighbors=statistics.avg_num_neighbors if avg == "auto" else float(avg),
            **{key: getattr(settings, key) for key in _CONSTRUCTOR_SETTINGS},
            **scale_shift,
            **settings.extra,
        )

    def _build_embeddings(self, config: dict) -> None:
        """Element tables, radial and angular edge embeddings, E0s, scale/shift and pair terms."""
        atomic_numbers = config["atomic_numbers"]
        cutoff_power = config["num_polynomial_cutoff"]
        self.pair_repulsion = ZBLRepulsion(cutoff_power) if config.get("pair_repulsion") else None
        self.distance_transform = make_distance_transform(config.get("distance_transform"))
        self.atomic_numbers = atomic_numbers
        self.r_max = config["r_max"]
        self.num_elements = len(atomic_numbers)
        z_to_index = torch.full((119,), -1, dtype=torch.long)
        z_to_index[atomic_numbers] = torch.arange(len(atomic_numbers))
        self.register_buffer("z_to_index", z_to_index, persistent=False)

        num_features = as_irreps(config["hidden_irreps"]).count(o3.Irrep(0, 1))
        self.node_embedding = Linear(Irreps(f"{self.num_elements}x0e"), Irreps(f"{num_features}x0e"))
        self.radial_embedding = RadialEmbedding(config["r_max"], config["num_bessel"], cutoff_power)
        sh_irreps = o3.Irreps.spherical_harmonics(config["max_ell"])
        self.spherical_harmonics = o3.SphericalHarmonics(sh_irreps, normalize=True, normalization="component")
        self.atomic_energies = AtomicEnergies(config["atomic_energies"])
        self.scale_shift = ScaleShift(config["atomic_inter_scale"], config["atomic_inter_shift"])

    def _build_layers(self, config: dict) -> None:
        """The interaction, product-basis and readout blocks, one of each per layer."""
        hidden_irreps = as_irreps(config["hidden_irreps"])
        num_features = hidden_irreps.count(o3.Irrep(0, 1))
        sh_irreps = o3.Irreps.spherical_harmonics(config["max_ell"])
        interaction_irreps = Irreps((sh_irreps * num_features).sort()[0].simplify())
        self.interactions = torch.nn.ModuleList()
        self.products = torch.nn.ModuleList()
        self.readouts = torch.nn.ModuleList()
        node_feats_irreps = Irreps(f"{num_features}x0e")
        num_interactions = config["num_interactions"]
        block_classes = interaction_block_classes(
            num_interactions, config.get("density_normalization", False), config.get("interaction_blocks")
        )
        conv_irreps = layer_edge_irreps(num_interactions, config.get("edge_irreps"), config.get("edge_irreps_first", False))
        for t, correlation in enumerate(config["correlation"]):
            last = t == num_interactions - 1
            hidden_out = Irreps(str(hidden_irreps[0])) if last else hidden_irreps
            interaction = block_classes[t](
                node_feats_irreps=node_feats_irreps,
                edge_attrs_irreps=sh_irreps,
                num_radial=config["num_bessel"],
                target_irreps=interaction_irreps,
                hidden_irreps=hidden_out,
                num_elements=self.num_elements,
                avg_num_neighbors=config["avg_num_neighbors"],
                radial_MLP=config["radial_MLP"],
                residual=t > 0 or bool(config.get("residual_first")),
                conv_backend=config["conv_backend"],
                edge_irreps=conv_irreps[t],
                **config["conv_options"],
            )
            self.interactions.append(interaction)
            self.products.append(
                ProductBlock(
                    interaction_irreps, hidden_out, correlation, self.num_elements,
                    backend=config["product_backend"], element_agnostic=bool(config.get("agnostic_product")),
                    **config["product_options"],
                )  # fmt: skip
            )
            self.readouts.append(
                NonLinearReadout(hidden_out, config["MLP_irreps"])
                if last
                else (NoReadout() if config.get("last_readout_only") else LinearReadout(hidden_out))
            )
            node_feats_irreps = hidden_out

    # ------------------------------------------------------------------ forward
    def element_index(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """``[N]`` position of each atom's element in ``atomic_numbers`` (``-1`` for an element the
        model does not know). No host reads; :meth:`check_inputs` reports unknown elements."""
        outside = (atomic_numbers < 0) | (atomic_numbers > 118)
        return self.z_to_index[atomic_numbers.clamp(0, 118)].masked_fill(outside, -1)

    def element_onehot(self, atomic_numbers: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``[N, num_elements]`` one-hot of :meth:`element_index` (a zero row for an unknown element)."""
        return _onehot(self.element_index(atomic_numbers), self.num_elements, dtype)

    def check_inputs(self, graph: GraphTensors) -> None:
        """``ValueError`` naming the first unknown element, non-finite position, singular periodic
        cell or out-of-range edge of ``graph`` (:func:`~equitensor.models.graph.check_graph`)."""
        check_graph(graph, self.element_index(graph.atomic_numbers), self.atomic_numbers)

    def forward(
        self,
        batch,
        compute_forces: bool = True,
        compute_stress: bool = False,
        training: bool = False,
        check_inputs: bool = True,
    ):
        """Energies and, on request, forces / stress / virials of ``batch`` (class docstring).

        ``check_inputs=True`` first validates the batch (:meth:`check_inputs`: one host read,
        skipped under ``torch.compile``); pass ``False`` when the graphs come from
        ``atoms_to_graph`` or the datasets, which validate them on construction.
        """
        graph = graph_tensors(batch)
        if check_inputs and not torch.compiler.is_compiling():
            self.check_inputs(graph)
        graph, displacement = gradient_leaves(graph, compute_forces, compute_stress)
        return self.predict(graph, displacement, compute_forces, compute_stress, training)

    def predict(
        self,
        graph: GraphTensors,
        displacement: torch.Tensor | None,
        compute_forces: bool = True,
        compute_stress: bool = False,
        training: bool = False,
    ) -> dict[str, torch.Tensor | None]:
        """:meth:`forward` on prepared tensors (:func:`~equitensor.models.outputs.gradient_leaves`):
        no host reads and no ``requires_grad_``, so it compiles with ``fullgraph=True``."""
        positions, cell = strained(graph, displacement)
        vectors = edge_vectors(graph, positions, cell)  # [n_edges, 3]
        lengths = torch.linalg.vector_norm(vectors, dim=1, keepdim=True)  # [n_edges, 1]
        element_index = self.element_index(graph.atomic_numbers)
        element_onehot = _onehot(element_index, self.num_elements, positions.dtype)  # [N, E]
        elements = _element_groups(element_index, self.num_elements)

        node_e0 = self.atomic_energies(element_onehot)  # [N]
        node_feats = self.node_embedding(element_onehot)  # [N, C]
        edge_attrs = self.spherical_harmonics(vectors)  # [n_edges, (max_ell+1)^2]
        edge_feats = self.radial_embedding(lengths)  # [n_edges, num_bessel]
        if self.distance_transform is not None or self.pair_repulsion is not None:
            sender, receiver = graph.edge_index[0], graph.edge_index[1]
            z_sender, z_receiver = graph.atomic_numbers[sender], graph.atomic_numbers[receiver]
        if self.distance_transform is not None:
            transformed = self.distance_transform(lengths, z_sender, z_receiver)
            edge_feats = self.radial_embedding.bessel(transformed) * self.radial_embedding.cutoff(lengths)
        edge_cutoff = None  # [n_edges, 1] when the cutoff scales the radial MLPs' outputs
        if not self.apply_cutoff:
            edge_cutoff = self.radial_embedding.cutoff(lengths)
            radial_lengths = transformed if self.distance_transform is not None else lengths
            edge_feats = self.radial_embedding.bessel(radial_lengths)

        site_energy = torch.zeros_like(node_e0)
        if self.pair_repulsion is not None:  # scaled with the interaction energies, as in mace-torch
            site_energy = self.pair_repulsion(lengths, z_sender, z_receiver, receiver, positions.shape[0])
        for interaction, product, readout in zip(self.interactions, self.products, self.readouts):
            message, sc = interaction(
                node_feats, element_onehot, edge_attrs, edge_feats, graph.edge_index, elements, edge_cutoff
            )
            node_feats = product(message, sc, element_onehot)
            site_energy = site_energy + readout(node_feats)  # [N]
        node_energy = node_e0 + self.scale_shift(site_energy)  # [N]
        num_graphs = graph.cell.shape[0]
        energy = sum_per_graph(node_energy, graph.node_graph, num_graphs)  # [B]

        results = derivatives(energy, graph, displacement, compute_forces, compute_stress, training)
        if (compute_forces or compute_stress) and not training:
            # autograd.grad consumed the graph: the energies carry no usable gradient
            energy, node_energy = energy.detach(), node_energy.detach()
        return {"energy": energy, "node_energy": node_energy, **results}

    def extra_repr(self) -> str:
        c = self.config
        return f"conv_backend={c['conv_backend']!r}, product_backend={c['product_backend']!r}, elements={self.atomic_numbers}"


def _element_groups(element_index: torch.Tensor, num_elements: int) -> ElementGroups:
    """Atoms sorted by element (one GEMM per element) in eager CPU code, where reading the
    per-element counts costs nothing; per-atom gathered weights (no host read) on other devices
    and under ``torch.compile``."""
    if element_index.device.type == "cpu" and not torch.compiler.is_compiling():
        return ElementGroups.from_index(element_index, num_elements)
    return ElementGroups.without_counts(element_index)


def _onehot(index: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``[N, num_classes]`` one-hot by comparison: an index outside the range gives a zero row
    (``torch.nn.functional.one_hot`` would check the values on the host)."""
    return (index[:, None] == torch.arange(num_classes, device=index.device)).to(dtype)

