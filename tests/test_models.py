"""MACE model: symmetries, forces and stress against finite differences, periodicity, I/O, bad input.

Backends: every conv backend in {cg, gaunt_fft, gaunt_grid, cp, e3nn} x every product basis in
the registry at test time gets the symmetry / batching / isolated-atom test
(``test_every_combination``); the longer tests run on the "star" of combinations (each conv
backend with the ``cg`` product basis, each product basis with the ``cg`` conv): the model is a
composition of the two, so a defect of either shows up there. Small float64 models.
"""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from torch_geometric.data import Batch

from equitensor._dtype import default_dtype
from equitensor import so3
from equitensor.models import MACE, atoms_to_graph, load_model, save_model
from equitensor.ops.backends import available_backends, available_product_bases, get_backend, get_product_basis

from .conftest import TOL

pytestmark = pytest.mark.usefixtures("default_float64")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread: these small models are latency-bound, and OpenMP barriers on a
    loaded 2-core machine cost tens of ms per op."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# every registered backend that can run MACE's convolution (uvu), read from its declared capabilities
CONV = [name for name in available_backends() if "uvu" in get_backend(name).supported_modes]
PRODUCT = available_product_bases()
COMBOS = [(c, p) for c in CONV for p in PRODUCT]
STAR = [(c, "cg") for c in CONV] + [("cg", p) for p in PRODUCT if p != "cg"]
# backends that are equivariant only up to their approximation error
APPROXIMATE = {name for name in CONV if not get_backend(name).exact} | {
    name for name in PRODUCT if not get_product_basis(name).exact
}
R_MAX = 3.5
ELEMENTS = [1, 6, 8, 29]


def small_model(conv="cg", product="cg", **overrides):
    config = dict(
        atomic_numbers=ELEMENTS, atomic_energies=[-13.6, -1029.0, -2041.0, -1.5], r_max=R_MAX,
        num_bessel=6, num_polynomial_cutoff=5, max_ell=3, num_channels=4, max_L=1, correlation=3,
        num_interactions=2, MLP_irreps="4x0e", radial_MLP=[8, 8], avg_num_neighbors=6.0,
        atomic_inter_scale=1.3, atomic_inter_shift=0.1, conv_backend=conv, product_backend=product,
    )  # fmt: skip
    config.update(overrides)
    torch.manual_seed(0)
    return MACE(**config)


def ethanol():
    a = molecule("CH3CH2OH")
    a.rattle(0.05, seed=1)
    return a


def slab():
    a = fcc111("Cu", size=(2, 2, 2), vacuum=4.0)
    a += Atoms("CO", positions=a.positions[-1] + np.array([[0, 0, 1.9], [0, 0, 3.05]]))
    a.rattle(0.03, seed=2)
    return a


def copper():
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.rattle(0.05, seed=3)
    return a


def run(model, atoms_list, **kwargs):
    batch = Batch.from_data_list([atoms_to_graph(a, model.r_max, torch.float64) for a in atoms_list])
    return model(batch, **kwargs)


def tolerance(conv, product):
    return 1e-4 if {conv, product} & APPROXIMATE else TOL[torch.float64]


def transformed(graph, rotation, translation):
    """The same graph with positions and cell moved by ``x -> R x + t`` (edges unchanged)."""
    moved = graph.clone()
    r = torch.tensor(rotation)
    moved.pos = graph.pos @ r.T + torch.tensor(translation)
    moved.cell = graph.cell @ r.T
    return moved


def _build(combo):
    with default_dtype(torch.float64):
        m = small_model(*combo)
    m.combo = combo
    return m


@pytest.fixture(scope="module", params=STAR, ids=lambda c: f"{c[0]}-{c[1]}")
def model(request):
    return _build(request.param)


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: f"{c[0]}-{c[1]}")
def test_every_combination(combo, rng):
    """Invariance (rotation with inversion, translation), force equivariance, batching and an isolated atom."""
    model = _build(combo)
    tol = tolerance(*combo)
    lone = Atoms("O", positions=[[0.0, 0.0, 0.0]])
    graphs = [atoms_to_graph(a, R_MAX, torch.float64) for a in (slab(), lone)]
    out = model(Batch.from_data_list(graphs))
    r = so3.random_rotation(rng, improper=True)
    moved = model(Batch.from_data_list([transformed(graphs[0], r, [0.3, -1.2, 2.0])]))
    scale = max(1.0, out["forces"].abs().max().item())
    assert abs(moved["energy"][0] - out["energy"][0]).item() < tol * max(
        1.0, abs(out["energy"][0].item()) / 100
    )
    n = graphs[0].num_nodes
    assert (moved["forces"] - out["forces"][:n] @ torch.tensor(r).T).abs().max() < tol * scale
    e0 = model.config["atomic_energies"][ELEMENTS.index(8)] + model.config["atomic_inter_shift"]
    assert abs(out["energy"][1].item() - e0) < 1e-12 and out["forces"][n:].abs().max() == 0
    single = model(Batch.from_data_list(graphs[:1]))
    assert abs(single["energy"][0] - out["energy"][0]).item() < 1e-10


def test_energy_invariant_and_forces_equivariant(model, rng):
    tol = tolerance(*model.combo)
    for atoms in (ethanol(), slab()):
        ref = run(model, [atoms])
        e0, f0 = ref["energy"], ref["forces"]
        scale = max(1.0, f0.abs().max().item())
        graph = atoms_to_graph(atoms, R_MAX, torch.float64)
        for improper in (False, True):
            r = so3.random_rotation(rng, improper=improper)
            out = model(Batch.from_data_list([transformed(graph, r, [0.3, -1.2, 2.0])]))
            assert abs(out["energy"] - e0).item() < tol * max(1.0, abs(e0.item()) / 100)
            assert (out["forces"] - f0 @ torch.tensor(r).T).abs().max() < tol * scale
        perm = rng.permutation(len(atoms))
        out = run(model, [atoms[perm]])
        assert abs(out["energy"] - e0).item() < tol * max(1.0, abs(e0.item()) / 100)
        assert (out["forces"] - f0[perm]).abs().max() < tol * scale


def test_batch_equals_separate_graphs(model):
    a, b = ethanol(), slab()
    together = run(model, [a, b])
    separate = [run(model, [x]) for x in (a, b)]
    assert torch.allclose(together["energy"], torch.cat([s["energy"] for s in separate]), atol=1e-10, rtol=0)
    assert torch.allclose(together["forces"], torch.cat([s["forces"] for s in separate]), atol=1e-10, rtol=0)


def test_forces_and_stress_are_finite_differences(model):
    h = 1e-5
    atoms = copper()
    out = run(model, [atoms], compute_stress=True)
    forces, stress = out["forces"].numpy(), out["stress"][0].numpy()

    def energy(a):
        return run(model, [a], compute_forces=False)["energy"].item()

    for k, c in [(0, 0), (3, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[k, c] += h
        minus.positions[k, c] -= h
        assert abs(-(energy(plus) - energy(minus)) / (2 * h) - forces[k, c]) < 1e-6
    volume = atoms.get_volume()
    for i, j in [(0, 0), (1, 2)]:
        strain = np.zeros((3, 3))
        strain[i, j] = strain[j, i] = h / (1 if i == j else 2)
        values = []
        for sign in (1, -1):
            a = atoms.copy()
            a.set_cell(atoms.cell[:] @ (np.eye(3) + sign * strain), scale_atoms=True)
            values.append(energy(a))
        fd = (values[0] - values[1]) / (2 * h) / volume
        assert abs(fd - stress[i, j]) < 1e-6
    assert np.allclose(stress, stress.T, atol=1e-12)
    assert torch.allclose(out["virials"][0], -out["stress"][0] * volume)


def test_supercell_energy_is_extensive(model):
    atoms = copper()
    single = run(model, [atoms], compute_stress=True)
    double = run(model, [atoms.repeat((2, 1, 1))], compute_stress=True)
    assert abs(double["energy"] - 2 * single["energy"]).item() < 1e-9
    assert (double["forces"][: len(atoms)] - single["forces"]).abs().max() < 1e-10
    assert (double["stress"] - single["stress"]).abs().max() < 1e-10


def test_isolated_atom_gets_its_e0(model):
    lone = Atoms("O", positions=[[0.0, 0.0, 0.0]])
    out = run(model, [lone], compute_stress=True)
    e0 = model.config["atomic_energies"][ELEMENTS.index(8)]
    shift = model.config["atomic_inter_shift"]
    assert abs(out["energy"].item() - (e0 + shift)) < 1e-12
    assert out["forces"].abs().max() == 0 and out["stress"].abs().max() == 0
    far = Atoms("HO", positions=[[0, 0, 0], [0, 0, 10.0]])
    out = run(model, [far])
    assert out["forces"].abs().max() == 0


def test_training_mode_backpropagates_force_loss(model):
    out = run(model, [ethanol()], training=True)
    loss = out["energy"].pow(2).sum() + out["forces"].pow(2).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    for p in model.parameters():
        p.grad = None


def test_save_load_round_trip(model, tmp_path):
    path = tmp_path / "model.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config == model.config
    a, b = run(model, [slab()], compute_stress=True), run(loaded, [slab()], compute_stress=True)
    for key in ("energy", "forces", "stress", "node_energy"):
        assert torch.equal(a[key], b[key])
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"format", "model", "version", "config", "state_dict"}
    assert (payload["format"], payload["model"]) == ("equitensor.model/1", "mace")


def test_float32_model_runs():
    model = small_model().float()
    batch = Batch.from_data_list([atoms_to_graph(ethanol(), R_MAX, torch.float32)])
    out = model(batch, compute_stress=False)
    assert out["energy"].dtype == torch.float32 and torch.isfinite(out["forces"]).all()


def test_hyperparameter_names_and_defaults():
    m = MACE(atomic_numbers=[1, 8])
    c = m.config
    assert (c["r_max"], c["num_bessel"], c["num_polynomial_cutoff"], c["max_ell"]) == (5.0, 8, 5, 3)
    assert c["hidden_irreps"] == "128x0e+128x1o" and c["correlation"] == [3, 3] and c["num_interactions"] == 2
    assert c["MLP_irreps"] == "16x0e" and c["radial_MLP"] == [64, 64, 64]
    assert (
        small_model(num_channels=None, max_L=None, hidden_irreps="4x0e+4x1o").config["hidden_irreps"]
        == "4x0e+4x1o"
    )
    # MACE's layer-1 convolution: 10 paths, 1280 weights per edge
    assert m.interactions[0].conv_tp.weight_numel == 128 * 4
    assert m.interactions[1].conv_tp.weight_numel == 1280


def test_bad_input_errors():
    model = small_model()
    with pytest.raises(
        ValueError, match=r"atom 1 is N \(Z=7\).*allowed elements: H \(1\), C \(6\), O \(8\), Cu \(29\)"
    ):
        run(model, [Atoms("HN", positions=[[0, 0, 0], [0, 0, 1.0]])])
    bad = ethanol()
    bad.positions[4, 1] = np.nan
    with pytest.raises(ValueError, match="atom 4 .*non-finite"):
        run(model, [bad])
    with pytest.raises(ValueError, match="atom 4 .*non-finite"):  # also caught on a prebuilt graph
        graph = atoms_to_graph(ethanol(), R_MAX)
        graph.pos[4, 1] = float("inf")
        model(Batch.from_data_list([graph]))
    flat = Atoms(
        "Cu2", positions=[[0, 0, 0], [1.0, 1.0, 0]], cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]], pbc=True
    )
    with pytest.raises(ValueError, match="singular"):
        run(model, [flat])
    with pytest.raises(ValueError, match="unknown tensor-product backend 'nope'"):
        small_model(conv="nope")
    with pytest.raises(ValueError, match="unknown product-basis backend 'nope'"):
        small_model(product="nope")
    with pytest.raises(ValueError, match="atomic_energies"):
        MACE(atomic_numbers=[1, 8], atomic_energies=[1.0])


@pytest.mark.parametrize("dense_elements_max", [8, 2])  # without counts: all elements' GEMM / weight gather
def test_element_linear_grouped_equals_one_hot(monkeypatch, dense_elements_max):
    """Element groups (sorted GEMMs with host counts; without counts, the all-elements GEMM or the
    per-atom weight gather) == the general one-hot formula: values, grads, double grads."""
    from equitensor.models import blocks
    from equitensor.models.blocks import ElementGroups, ElementLinear

    monkeypatch.setattr(blocks, "DENSE_ELEMENTS_MAX", dense_elements_max)
    layer = ElementLinear("4x0e+3x1o+2x2e", 5, "3x0e+2x1o+2x1e")  # 1e has no source: zeros
    index = torch.tensor([3, 0, 3, 1, 0, 0, 3])  # elements 2 and 4 absent
    onehot = torch.nn.functional.one_hot(index, 5).to(torch.get_default_dtype())
    groups = ElementGroups.from_index(index, 5)
    assert groups.counts == [3, 1, 0, 3, 0]
    x = torch.randn(7, layer.irreps_in.dim, requires_grad=True)
    probe = torch.randn(7, layer.irreps_out.dim)
    results = []
    for g in (None, groups, ElementGroups.without_counts(index)):
        out = layer(x, onehot, g)
        grad_x, grad_w = torch.autograd.grad((out * probe).sum(), (x, layer.weight), create_graph=True)
        second = torch.autograd.grad((grad_x**2).sum(), layer.weight)[0]
        results.append((out, grad_x, grad_w, second))
    for grouped in results[1:]:
        for expected, got in zip(results[0], grouped):
            assert torch.allclose(got, expected, atol=1e-12, rtol=1e-12)
