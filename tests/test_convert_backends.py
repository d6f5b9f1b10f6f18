"""``convert_backends`` and ``load_model(..., conv_backend=, product_backend=)``: same function."""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule
from torch_geometric.data import Batch

from equitensor.models import MACE, atoms_to_graph, convert_backends, load_model, save_model
from equitensor.ops.backends import available_backends

from .conftest import TOL

pytestmark = pytest.mark.usefixtures("default_float64")

HAS_CUEQ = "cueq" in available_backends()
needs_cueq = pytest.mark.skipif(not HAS_CUEQ, reason="cuequivariance-torch is not installed")


def tiny_model(conv="cg", product="cg"):
    torch.manual_seed(0)
    return MACE(
        atomic_numbers=[1, 6, 8], atomic_energies=[-13.6, -1029.0, -2041.0], r_max=3.5, num_bessel=4,
        max_ell=2, num_channels=3, max_L=1, correlation=2, num_interactions=2, MLP_irreps="3x0e",
        radial_MLP=[8], avg_num_neighbors=4.0, conv_backend=conv, product_backend=product,
    )  # fmt: skip


def ethanol_batch():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return Batch.from_data_list([atoms_to_graph(atoms, 3.5, torch.float64)])


def trained_like(model):
    """Perturb every parameter so that a conversion that drops one cannot pass unnoticed."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def assert_same_energy_and_forces(a, b, batch):
    out_a, out_b = a(batch), b(batch)
    torch.testing.assert_close(out_b["energy"], out_a["energy"], atol=TOL[torch.float64], rtol=0)
    torch.testing.assert_close(out_b["forces"], out_a["forces"], atol=TOL[torch.float64], rtol=0)


@needs_cueq
def test_cg_to_cueq_and_back_is_exact():
    model = trained_like(tiny_model())
    batch = ethanol_batch()
    on_cueq = convert_backends(model, conv_backend="cueq", product_backend="cueq")
    assert on_cueq.config["conv_backend"] == on_cueq.config["product_backend"] == "cueq"
    assert on_cueq.config["conv_options"] == {} and model.config["conv_backend"] == "cg"  # source untouched
    assert_same_energy_and_forces(model, on_cueq, batch)
    back = convert_backends(on_cueq, conv_backend="cg", product_backend="cg")
    state, returned = model.state_dict(), back.state_dict()
    assert state.keys() == returned.keys()
    assert all(torch.equal(state[k], returned[k]) for k in state)


def test_cg_to_e3nn_gives_the_same_energies_and_forces():
    model = trained_like(tiny_model())
    on_e3nn = convert_backends(model, conv_backend="e3nn")
    assert on_e3nn.config["product_backend"] == "cg"
    assert_same_energy_and_forces(model, on_e3nn, ethanol_batch())


def test_dtype_and_mode_are_kept():
    model = tiny_model().float().eval()
    converted = convert_backends(model, conv_backend="e3nn")
    assert next(converted.parameters()).dtype == torch.float32 and not converted.training


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(conv_backend="gaunt_grid"), r"conv_backend 'cg' -> 'gaunt_grid'.*per_path.*per_degree"),
        (dict(product_backend="gaunt_grid"), r"product_backend 'cg' -> 'gaunt_grid'.*retrained"),
        (dict(conv_backend="cp"), r"conv_backend 'cg' -> 'cp'"),
    ],
)
def test_conversions_that_change_the_function_are_refused(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        convert_backends(tiny_model(), **kwargs)


def test_factorised_backends_with_other_options_are_refused():
    """Same backend, other options (a CP rank) is another function too."""
    model = tiny_model(conv="cp")
    with pytest.raises(ValueError, match="'cp' -> 'cp'"):
        convert_backends(model, conv_options={"rank": 2})


def test_only_mace_models_are_converted():
    with pytest.raises(ValueError, match="MACE"):
        convert_backends(torch.nn.Linear(2, 2), conv_backend="cg")


@needs_cueq
def test_load_model_on_other_backends(tmp_path):
    model = trained_like(tiny_model())
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt", conv_backend="cueq", product_backend="cueq")
    assert loaded.config["conv_backend"] == "cueq"
    assert_same_energy_and_forces(model, loaded, ethanol_batch())
    with pytest.raises(ValueError, match="gaunt_grid"):
        load_model(tmp_path / "model.pt", conv_backend="gaunt_grid")
