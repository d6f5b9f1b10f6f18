"""mace-torch's architecture variants in equitensor's MACE: the non-linear residual interaction
(``RealAgnosticResidualNonLinearInteractionBlock``) on every conv backend, the element-agnostic
product basis, ``edge_irreps``, ``apply_cutoff=False`` and ``last_readout_only``: symmetries,
model files, backend conversion, bad options.
Their equality with mace-torch itself is in ``test_from_mace.py`` (needs mace-torch)."""

import pytest
import torch
from torch_geometric.data import Batch

from equitensor import so3
from equitensor.models import atoms_to_graph, convert_backends, load_model, save_model
from equitensor.models.nonlinear_interaction import NonLinearInteractionBlock

from .test_models import CONV, R_MAX, ethanol, run, slab, small_model, tolerance, transformed

pytestmark = pytest.mark.usefixtures("default_float64")


def nonlinear_model(conv="cg", **overrides):
    model = small_model(conv, interaction_blocks="nonlinear", residual_first=True, **overrides)
    with torch.no_grad():  # the block starts at alpha = 20, beta = 0: make the density count
        for interaction in model.interactions:
            interaction.alpha.fill_(1.5)
            interaction.beta.fill_(0.7)
    return model


VARIANTS = {
    "nonlinear": {},
    "nonlinear-agnostic-edge-irreps-no-cutoff": dict(
        agnostic_product=True, edge_irreps="3x0e+3x1o+3x2e", edge_irreps_first=True, apply_cutoff=False,
        last_readout_only=True,
    ),
}
CASES = [(conv, "nonlinear") for conv in CONV] + [("cg", "nonlinear-agnostic-edge-irreps-no-cutoff")]


@pytest.mark.parametrize("conv,variant", CASES)
def test_energy_invariant_and_forces_equivariant_on_every_conv_backend(conv, variant, rng):
    model = nonlinear_model(conv, **VARIANTS[variant])
    assert all(isinstance(block, NonLinearInteractionBlock) for block in model.interactions)
    tol = tolerance(conv, "cg")
    graph = atoms_to_graph(slab(), R_MAX, torch.float64)
    out = model(Batch.from_data_list([graph]))
    scale = max(1.0, out["forces"].abs().max().item())
    assert out["forces"].abs().max() > 1e-3  # the symmetry check below is not about zeros
    for improper in (False, True):
        r = so3.random_rotation(rng, improper=improper)
        moved = model(Batch.from_data_list([transformed(graph, r, [0.3, -1.2, 2.0])]))
        assert abs(moved["energy"] - out["energy"]).item() < tol * max(1.0, abs(out["energy"].item()) / 100)
        assert (moved["forces"] - out["forces"] @ torch.tensor(r).T).abs().max() < tol * scale


def test_save_load_and_backend_conversion_keep_the_function(tmp_path):
    model = nonlinear_model("cg", **VARIANTS["nonlinear-agnostic-edge-irreps-no-cutoff"])
    atoms = [ethanol(), slab()]
    ref = run(model, atoms, compute_stress=True)
    path = tmp_path / "nonlinear.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config["interaction_blocks"] == "nonlinear" and loaded.config["agnostic_product"] is True
    assert loaded.config["apply_cutoff"] is False and loaded.config["last_readout_only"] is True
    assert [str(block.edge_irreps) for block in loaded.interactions] == ["3x0e", "3x0e+3x1o+3x2e"]
    for other in (loaded, convert_backends(model, conv_backend="e3nn")):
        out = run(other, atoms, compute_stress=True)
        for key in ("energy", "forces", "stress"):
            assert torch.allclose(out[key], ref[key], atol=1e-10, rtol=0), key


def test_bad_options_say_what_to_set():
    with pytest.raises(ValueError, match="residual_first=True"):
        small_model(interaction_blocks="nonlinear")
    with pytest.raises(ValueError, match="residual_first=True"):
        small_model(interaction_blocks="attention")
    with pytest.raises(ValueError, match="density_normalization applies to the default interaction block only"):
        small_model(interaction_blocks="nonlinear", residual_first=True, density_normalization=True)
    with pytest.raises(ValueError, match=r"one per interaction \(2\), got \['nonlinear'\]"):
        small_model(interaction_blocks=["nonlinear"], residual_first=True)
    with pytest.raises(ValueError, match=r"one of \['default', 'nonlinear', 'attention'\]"):
        small_model(interaction_blocks="transformer", residual_first=True)
    with pytest.raises(ValueError, match="edge_irreps_first=True needs edge_irreps"):
        small_model(edge_irreps_first=True)


def test_names_per_layer_pick_each_block():
    model = small_model(interaction_blocks=["default", "nonlinear"])
    names = [type(block).__name__ for block in model.interactions]
    assert names == ["InteractionBlock", "NonLinearInteractionBlock"]
    assert not model.interactions[0].residual  # a non-residual first layer stays one


def test_attention_block_symmetries_and_file_round_trip(tmp_path, rng):
    model = small_model(interaction_blocks=["default", "attention"], apply_cutoff=False)
    assert type(model.interactions[1]).__name__ == "AttentionInteractionBlock"
    graph = atoms_to_graph(slab(), R_MAX, torch.float64)
    out = model(Batch.from_data_list([graph]))
    assert out["forces"].abs().max() > 1e-3
    r = so3.random_rotation(rng, improper=True)
    moved = model(Batch.from_data_list([transformed(graph, r, [0.3, -1.2, 2.0])]))
    tol = tolerance("cg", "cg")
    assert abs(moved["energy"] - out["energy"]).item() < tol * max(1.0, abs(out["energy"].item()) / 100)
    assert (moved["forces"] - out["forces"] @ torch.tensor(r).T).abs().max() < tol * max(1.0, out["forces"].abs().max())
    save_model(model, tmp_path / "attention.pt")
    again = load_model(tmp_path / "attention.pt")(Batch.from_data_list([graph]))
    assert torch.allclose(again["forces"], out["forces"], atol=1e-12, rtol=0)
