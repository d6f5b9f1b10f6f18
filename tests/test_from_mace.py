"""``from_mace``: mace-torch models (random weights) converted to equitensor give the same energies,
forces and stress in float64 (1e-8 relative) on an OC20 slab and a molecule.

Runs where mace-torch is importable (the mace-torch venv of ``.ci/run``); skipped elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import read
from torch_geometric.data import Batch

from equitensor.models import atoms_to_graph, from_mace

from .test_models import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("default_float64")

mace = pytest.importorskip("mace", reason="mace-torch is not installed here (see .ci/run's mace-torch venv)")

R_MAX = 4.0


def structures(shared_data):
    slab = read(shared_data / "oc20_traj" / "random1000100.traj", 0)  # 33 atoms: Au, Na, O
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=1)
    squeezed = mol.copy()  # bonds at 0.6x: well inside the ZBL range (covalent radii sums)
    squeezed.positions *= 0.6
    return slab, mol, squeezed


def build_mace(
    cls="ScaleShiftMACE",
    first="RealAgnosticInteractionBlock",
    interaction="RealAgnosticResidualInteractionBlock",
    heads=None,
    elements=(1, 6, 8, 11, 79),
    **extra,
):
    """A small mace-torch model with every weight moved away from its initial values."""
    from e3nn import o3
    from mace import modules

    torch.manual_seed(0)
    num_heads = len(heads or ["Default"])
    kwargs = dict(
        r_max=R_MAX, num_bessel=6, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=modules.interaction_classes[interaction],
        interaction_cls_first=modules.interaction_classes[first],
        num_interactions=2, num_elements=len(elements), hidden_irreps=o3.Irreps("4x0e+4x1o"),
        MLP_irreps=o3.Irreps("4x0e"), avg_num_neighbors=7.0, atomic_numbers=list(elements),
        correlation=3, gate=torch.nn.functional.silu, radial_MLP=[8, 8],
    )  # fmt: skip
    energies = np.random.default_rng(0).normal(-3.0, 1.0, size=(num_heads, len(elements)))
    kwargs["atomic_energies"] = energies if heads else energies[0]
    if heads is not None:
        kwargs["heads"] = heads
    kwargs.update(extra)
    if "edge_irreps" in kwargs:
        kwargs["edge_irreps"] = o3.Irreps(kwargs["edge_irreps"])
    if cls == "ScaleShiftMACE":
        scale = [1.3, 0.7][:num_heads] if heads else 1.3
        shift = [0.1, -0.2][:num_heads] if heads else 0.1
        model = modules.ScaleShiftMACE(atomic_inter_scale=scale, atomic_inter_shift=shift, **kwargs)
    else:
        model = modules.MACE(**kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for interaction in model.interactions:
            if hasattr(interaction, "beta"):  # the non-linear block starts at 1 / 20: make the density count
                interaction.alpha.fill_(1.5)
                interaction.beta.fill_(0.7)
    return model


def mace_outputs(model, atoms, head=None):
    from mace import data as mace_data
    from mace.tools import torch_geometric, utils

    z_table = utils.AtomicNumberTable([int(z) for z in model.atomic_numbers])
    config = mace_data.config_from_atoms(atoms)
    if head is not None:
        config.head = head
    heads = list(getattr(model, "heads", None) or ["Default"])
    graph = mace_data.AtomicData.from_config(config, z_table=z_table, cutoff=R_MAX, heads=heads)
    batch = next(iter(torch_geometric.dataloader.DataLoader([graph], batch_size=1, shuffle=False)))
    return model(batch.to_dict(), compute_force=True, compute_stress=bool(atoms.pbc.all()))


def assert_same(ours, model, atoms, head=None):
    ref = mace_outputs(model, atoms, head)
    batch = Batch.from_data_list([atoms_to_graph(atoms, R_MAX, torch.float64)])
    out = ours(batch, compute_stress=bool(atoms.pbc.all()))
    assert ref["forces"].abs().max() > 1e-3  # a non-trivial reference
    energy_scale = ref["energy"].abs().max().item()
    assert (out["energy"] - ref["energy"]).abs().max().item() <= 1e-8 * energy_scale
    force_scale = ref["forces"].abs().max().item()
    assert (out["forces"] - ref["forces"]).abs().max().item() <= 1e-8 * force_scale
    if atoms.pbc.all():
        stress_scale = ref["stress"].abs().max().item()
        assert stress_scale > 0
        assert (out["stress"] - ref["stress"]).abs().max().item() <= 1e-8 * stress_scale


NONLINEAR = "RealAgnosticResidualNonLinearInteractionBlock"
ARCHITECTURES = {
    # MACE-OFF and the models trained with mace-torch's defaults before 0.3.x
    "scaleshift-first-plain": dict(cls="ScaleShiftMACE", first="RealAgnosticInteractionBlock"),
    # MACE-MP-0: a residual first interaction
    "scaleshift-first-residual": dict(cls="ScaleShiftMACE", first="RealAgnosticResidualInteractionBlock"),
    "mace-no-scale-shift": dict(cls="MACE", first="RealAgnosticInteractionBlock"),
    # MACE-MP-0b / MPA-0 / OMAT-0: ZBL pair repulsion and the Agnesi distance transform
    "scaleshift-zbl-agnesi": dict(
        cls="ScaleShiftMACE", first="RealAgnosticResidualInteractionBlock", pair_repulsion=True,
        distance_transform="Agnesi",
    ),
    "mace-zbl-soft": dict(cls="MACE", pair_repulsion=True, distance_transform="Soft"),
    "scaleshift-density": dict(
        first="RealAgnosticDensityInteractionBlock", interaction="RealAgnosticDensityResidualInteractionBlock"
    ),
    # the non-linear residual interaction, with ZBL and the Agnesi transform
    "scaleshift-nonlinear-zbl-agnesi": dict(
        first=NONLINEAR, interaction=NONLINEAR, pair_repulsion=True, distance_transform="Agnesi"
    ),
    "mace-nonlinear": dict(cls="MACE", first=NONLINEAR, interaction=NONLINEAR),
    # mace-torch's default interaction_first with the non-linear block after it, and the reverse
    "scaleshift-residual-then-nonlinear": dict(
        first="RealAgnosticResidualInteractionBlock", interaction=NONLINEAR
    ),
    "scaleshift-nonlinear-then-plain-residual": dict(
        first=NONLINEAR, interaction="RealAgnosticResidualInteractionBlock", num_interactions=3
    ),
    # element-agnostic product basis and convolution irreps other than the node features
    "nonlinear-agnostic-edge-irreps-first": dict(
        first=NONLINEAR, interaction=NONLINEAR, use_agnostic_product=True, edge_irreps="3x0e+3x1o+3x2e",
        use_edge_irreps_first=True,
    ),
    "residual-edge-irreps": dict(first="RealAgnosticResidualInteractionBlock", edge_irreps="6x0e+6x1o"),
    # the "attention" block (node-dependent edge weights) after mace-torch's default first block
    "scaleshift-residual-then-attention": dict(
        first="RealAgnosticResidualInteractionBlock", interaction="RealAgnosticAttResidualInteractionBlock",
        num_interactions=3,
    ),
    # apply_cutoff=False: the cutoff scales the radial MLPs' outputs, not their inputs
    "nonlinear-no-cutoff-on-radial-features-agnesi": dict(
        first=NONLINEAR, interaction=NONLINEAR, apply_cutoff=False, distance_transform="Agnesi"
    ),
    "density-no-cutoff-on-radial-features": dict(
        first="RealAgnosticDensityInteractionBlock",
        interaction="RealAgnosticDensityResidualInteractionBlock",
        apply_cutoff=False,
    ),
    "nonlinear-last-readout-only-3-layers": dict(
        first=NONLINEAR, interaction=NONLINEAR, use_last_readout_only=True, num_interactions=3
    ),
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_converted_model_matches_mace_torch(shared_data, name):
    model = build_mace(**ARCHITECTURES[name])
    ours = from_mace(model)
    for atoms in structures(shared_data):
        assert_same(ours, model, atoms)


def test_multi_head_model_keeps_the_chosen_head(shared_data):
    model = build_mace(heads=["pt_head", "oc20"], first="RealAgnosticResidualInteractionBlock")
    slab, mol, _ = structures(shared_data)
    first = from_mace(model)
    assert_same(first, model, slab, head="pt_head")
    assert_same(first, model, mol, head="pt_head")
    second = from_mace(model, head="oc20")
    assert_same(second, model, slab, head="oc20")
    assert second.config["atomic_inter_scale"] == pytest.approx(0.7)


def test_unknown_head_is_refused():
    model = build_mace(heads=["pt_head", "oc20"])
    with pytest.raises(ValueError, match=r"head 'omat' does not exist.*\['pt_head', 'oc20'\]"):
        from_mace(model, head="omat")


def test_unsupported_block_names_the_class_and_lists_the_supported():
    from mace import modules

    class CustomInteractionBlock(modules.interaction_classes["RealAgnosticResidualInteractionBlock"]):
        """A user's own block: mace-torch 0.3.16 has no interaction block that from_mace refuses."""

    model = build_mace()
    model.interactions[1].__class__ = CustomInteractionBlock
    supported = r"supports.*RealAgnosticInteractionBlock.*RealAgnosticAttResidualInteractionBlock"
    with pytest.raises(ValueError, match=rf"CustomInteractionBlock.*{supported}"):
        from_mace(model)


@pytest.mark.parametrize(
    "option,message",
    [
        (dict(use_so3=True), "use_so3"),
        (dict(keep_last_layer_irreps=True), "keep_last_layer_irreps=True"),
        (dict(radial_type="gaussian"), "radial basis GaussianBasis"),
    ],
)
def test_unsupported_option_is_named(option, message):
    with pytest.raises(ValueError, match=message):
        from_mace(build_mace(**option))


def test_single_interaction_model_is_refused_with_what_is_supported():
    model = build_mace(num_interactions=1)
    with pytest.raises(ValueError, match=r"1 interaction\(s\).*supported are two or more interactions"):
        from_mace(model)


def test_model_file_needs_trust_pickle(tmp_path):
    model = build_mace()
    path = tmp_path / "small.model"
    torch.save(model, path)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        from_mace(path)
    ours = from_mace(path, trust_pickle=True)
    assert ours.atomic_numbers == [1, 6, 8, 11, 79]


def test_model_file_without_mace_torch_says_how_to_fix(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "small.model"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "mace", None)  # import mace now raises ImportError
    with pytest.raises(ImportError, match="pip install mace-torch"):
        from_mace(path, trust_pickle=True)


def test_zbl_term_is_exercised_by_the_structures(shared_data):
    """The ZBL envelope ends at the sum of covalent radii: the squeezed molecule is well inside it."""
    from equitensor.models.pair_terms import ZBLRepulsion

    zbl = ZBLRepulsion(5)
    for atoms in structures(shared_data)[2:]:
        graph = atoms_to_graph(atoms, R_MAX, torch.float64)
        sender, receiver = graph.edge_index
        shifts = graph.cell_offsets.double() @ graph.cell.reshape(3, 3).double()
        lengths = (graph.pos[receiver] - graph.pos[sender] + shifts).norm(dim=1, keepdim=True)
        z = graph.atomic_numbers
        energy = zbl(lengths, z[sender], z[receiver], receiver, len(atoms))
        assert energy.sum() > 1.0  # eV


def test_fine_tuning_from_a_mace_model_file_starts_from_its_predictions(shared_data, tmp_path):
    from equitensor.train.config import DataConfig, ModelConfig
    from equitensor.train.finetune import foundation_model
    from equitensor.train.setup import compute_statistics

    model = build_mace(first="RealAgnosticResidualInteractionBlock")
    path = tmp_path / "foundation.model"
    torch.save(model, path)
    slab = structures(shared_data)[0]
    graph = atoms_to_graph(slab, R_MAX, torch.float64)
    graph.energy, graph.forces = torch.zeros(1), torch.zeros(len(slab), 3)
    stats = compute_statistics([graph], DataConfig(e0s="zero"))
    started = foundation_model(ModelConfig(init_from=str(path)), stats, allow_pickle=True)
    assert_same(started, model, slab)
