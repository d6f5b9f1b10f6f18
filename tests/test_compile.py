"""Compile-clean execution: forces/stress of any energy (finite differences), the MACE forward on
``meta`` tensors (no host reads), ``torch.compile(fullgraph=True)`` == eager for inference and
training, what recompiles, and the compiled ASE calculator.

Inductor compiles are slow, so the models are tiny and the inductor tests few; the recompile
test counts dynamo compilations without running inductor.
"""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.md.verlet import VelocityVerlet
from torch_geometric.data import Batch

from equitensor._dtype import default_dtype
from equitensor.models import EquitensorCalculator, atoms_to_graph, compile_model
from equitensor.models.outputs import derivatives, edge_vectors, gradient_leaves, graph_tensors, strained

from .conftest import TOL
from .test_models import copper, ethanol, single_thread, slab, small_model  # noqa: F401

#: (conv backend, conv options, product backend, product options) -> skip reason or None.
COMBOS = [
    (("cg", None, "cg", None), None),  # the numba kernels, as torch.library custom ops
    (("gaunt_grid", None, "gaunt_grid", None), None),
    (("gaunt_fft", None, "cp", None), None),
    (("cueq", None, "cueq", None), None),
    (("e3nn", None, "cg", {"method": "naive"}), None),
    (("cg", {"method": "grouped"}, "cg", {"method": "naive"}), None),  # cg's off-CPU route
]
#: inductor compiles take minutes each on a 2-core machine: opt in with EQUITENSOR_TEST_INDUCTOR=1.
#: The fullgraph trace itself is checked for every combination by the aot_eager test below.
INDUCTOR = pytest.mark.skipif(
    os.environ.get("EQUITENSOR_TEST_INDUCTOR") != "1",
    reason="inductor compile takes minutes per model; set EQUITENSOR_TEST_INDUCTOR=1 to run it",
)


def combo_id(combo):
    conv, conv_options, product, product_options = combo
    name = lambda backend, options: backend + (f"[{options['method']}]" if options else "")  # noqa: E731
    return f"{name(conv, conv_options)}-{name(product, product_options)}"


def tiny_model(combo, dtype=torch.float32):
    conv, conv_options, product, product_options = combo
    with default_dtype(dtype):
        return small_model(
            conv, product, conv_options=conv_options, product_options=product_options,
            max_ell=2, correlation=2, radial_MLP=[8],
        )  # fmt: skip


def batch_of(atoms_list, r_max, dtype=torch.float32):
    return Batch.from_data_list([atoms_to_graph(a, r_max, dtype) for a in atoms_list])


def combos(with_pending=True):
    return [
        pytest.param(c, marks=pytest.mark.skip(reason=reason), id=combo_id(c)) if reason else pytest.param(c, id=combo_id(c))
        for c, reason in COMBOS
        if with_pending or reason is None
    ]


# ---------------------------------------------------------------- model-agnostic outputs


def _pair_energy(graph, displacement):
    """Morse-like pair energy summed per graph (each edge is counted from both ends: halved)."""
    positions, cell = strained(graph, displacement)
    r = torch.linalg.vector_norm(edge_vectors(graph, positions, cell), dim=1)
    pair = (1 - torch.exp(-1.3 * (r - 2.4))) ** 2 * torch.cos(np.pi / 2 * r / 4.0) ** 2
    sender_graph = graph.node_graph[graph.edge_index[0]]
    return pair.new_zeros(graph.cell.shape[0]).index_add(0, sender_graph, 0.5 * pair)


def test_outputs_are_finite_differences():
    """Forces and stress of an arbitrary energy function == central differences in float64
    (positions, and a strain applied to cell and positions), zero stress without periodicity."""
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True)
    crystal.rattle(0.1, seed=5)
    batch = batch_of([crystal, molecule("H2O")], 4.0, torch.float64)
    graph, displacement = gradient_leaves(graph_tensors(batch), True, True)
    energy = _pair_energy(graph, displacement)
    out = derivatives(energy, graph, displacement, True, True, training=False)

    def energy_of(atoms):
        with torch.no_grad():
            return float(_pair_energy(graph_tensors(batch_of([atoms], 4.0, torch.float64)), None)[0])

    h = 1e-5
    for atom, axis in [(0, 0), (3, 2)]:
        plus, minus = crystal.copy(), crystal.copy()
        plus.positions[atom, axis] += h
        minus.positions[atom, axis] -= h
        expected = -(energy_of(plus) - energy_of(minus)) / (2 * h)
        assert abs(float(out["forces"][atom, axis]) - expected) < 1e-7
    for i, j in [(0, 0), (0, 1), (2, 2)]:
        strains = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[i, j] += sign * h / 2
            eps[j, i] += sign * h / 2
            strained_atoms = crystal.copy()
            strained_atoms.set_cell(crystal.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
            strains.append(energy_of(strained_atoms))
        expected = (strains[0] - strains[1]) / (2 * h) / crystal.get_volume()
        assert abs(float(out["stress"][0, i, j]) - expected) < 1e-7
        assert torch.allclose(out["virials"][0], -out["stress"][0] * crystal.get_volume())
    assert torch.equal(out["stress"][1], torch.zeros(3, 3, dtype=torch.float64))


# ---------------------------------------------------------------- no host reads


def test_forward_runs_on_meta_tensors():
    """The whole forward with forces, stress and the training graph runs on ``meta`` tensors,
    which have no values: any host read of a tensor value would raise."""
    combo = ("e3nn", None, "cg", {"method": "naive"})
    model = tiny_model(combo).to("meta")
    real = graph_tensors(batch_of([slab(), ethanol()], model.r_max))
    meta = SimpleNamespace(**{k: v.to("meta") for k, v in real._asdict().items()})
    meta.batch = meta.node_graph
    out = model(meta, compute_stress=True, training=True, check_inputs=False)
    assert out["forces"].device.type == "meta" and out["forces"].shape == real.pos.shape
    assert out["stress"].shape == (2, 3, 3) and out["energy"].shape == (2,)
    loss = (out["forces"] ** 2).sum() + (out["stress"] ** 2).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters() if p.requires_grad)


def test_check_inputs_still_names_the_problem():
    model = tiny_model(("e3nn", None, "cg", {"method": "naive"}), torch.float64)
    graph = atoms_to_graph(ethanol(), model.r_max)
    graph.edge_index = graph.edge_index.clone()
    graph.edge_index[1, 3] = 99
    with pytest.raises(ValueError, match=r"edge_index refers to atoms outside \[0, 9\)"):
        model(Batch.from_data_list([graph]))


# ---------------------------------------------------------------- compiled == eager


def _compare(got, expected, keys):
    for key in keys:
        scale = max(1.0, float(expected[key].abs().max()))
        error = float((got[key] - expected[key]).abs().max()) / scale
        assert error < TOL[torch.float32], f"{key}: relative error {error:.2e}"


@pytest.mark.parametrize("combo", combos())
def test_fullgraph_trace_equals_eager(combo):
    """``fullgraph=True`` through every backend (aot_eager: dynamo and AOTAutograd, no codegen):
    energies, forces, stress, and parameter gradients of a force + stress loss."""
    torch._dynamo.reset()  # each model compiles MACE.predict afresh (dynamo's per-code cache is bounded)
    model = tiny_model(combo)
    compiled = compile_model(model, backend="aot_eager")
    batch = batch_of([slab(), copper()], model.r_max)
    _compare(compiled(batch, compute_stress=True), model(batch, compute_stress=True), ("energy", "forces", "stress"))
    grads = []
    for run in (model, compiled):
        model.zero_grad()
        out = run(batch, compute_stress=True, training=True)
        ((out["energy"] ** 2).sum() + (out["forces"] ** 2).sum() + (out["stress"] ** 2).sum()).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    _compare(grads[1], grads[0], grads[0])


@pytest.mark.slow
@INDUCTOR
@pytest.mark.parametrize("combo", combos())
def test_compiled_inference_and_training_equal_eager(combo):
    """Inductor, fullgraph: energies, forces and stress for two batches of different sizes, then
    a force + stress loss backpropagated to the parameters; float32 rounding apart."""
    torch._dynamo.reset()
    model = tiny_model(combo)
    compiled = compile_model(model)
    for atoms in ([slab(), copper()], [ethanol(), copper(), slab()]):
        batch = batch_of(atoms, model.r_max)
        _compare(compiled(batch, compute_stress=True), model(batch, compute_stress=True), ("energy", "forces", "stress"))
        grads = []
        for run in (model, compiled):
            model.zero_grad()
            out = run(batch, compute_stress=True, training=True)
            loss = (out["energy"] ** 2).sum() + (out["forces"] ** 2).sum() + (out["stress"] ** 2).sum()
            loss.backward()
            grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
        _compare(grads[1], grads[0], grads[0])


def test_what_recompiles():
    """Dynamic atom and edge counts: sizes do not recompile; one graph for a single structure,
    one for batches of several, one per flag combination."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = tiny_model(("e3nn", None, "cg", {"method": "naive"}))
    counter = CompileCounter()
    compiled = compile_model(model, backend=counter)
    for atoms in (ethanol(), slab(), copper(), molecule("CH4")):
        compiled(batch_of([atoms], model.r_max))
    assert counter.frame_count == 1
    for atoms in ([ethanol(), slab()], [copper(), slab(), ethanol()]):
        compiled(batch_of(atoms, model.r_max))
    assert counter.frame_count == 2
    compiled(batch_of([slab(), copper()], model.r_max), compute_stress=True)
    assert counter.frame_count == 3


def test_compiled_calculator_runs_md_like_eager():
    """``EquitensorCalculator(compile=...)``: the same energies and forces along a short MD run."""
    model = tiny_model(("e3nn", None, "cg", {"method": "naive"}), torch.float64)
    trajectories = []
    for options in (False, {"backend": "aot_eager"}):
        atoms = slab()
        atoms.calc = EquitensorCalculator(model, compile=options)
        atoms.set_velocities(np.random.default_rng(0).normal(0.0, 0.02, (len(atoms), 3)))  # Å/(ASE time)
        energies = []
        dynamics = VelocityVerlet(atoms, 0.5 * units.fs)
        dynamics.attach(lambda atoms=atoms: energies.append(atoms.get_potential_energy()))
        dynamics.run(3)
        trajectories.append((np.array(energies), atoms.get_forces(), atoms.get_stress()))
    for got, expected in zip(trajectories[1], trajectories[0]):
        assert np.allclose(got, expected, atol=TOL[torch.float64], rtol=0)


def test_per_graph_sum_compiles_with_inductor_for_one_graph():
    """The per-graph energy sum of a single system with a dynamic atom count goes through
    inductor's CPU code generation (an ``index_add`` there fails to compile, torch 2.13) and
    equals the eager ``index_add``; several graphs too."""
    from equitensor.models.outputs import sum_per_graph

    torch._dynamo.reset()
    compiled = torch.compile(sum_per_graph, fullgraph=True)
    generator = torch.Generator().manual_seed(0)
    for atoms, graphs in [(33, 1), (40, 1), (50, 3)]:
        values = torch.randn(atoms, generator=generator)
        node_graph = torch.sort(torch.randint(0, graphs, (atoms,), generator=generator)).values
        torch._dynamo.maybe_mark_dynamic(values, 0)
        torch._dynamo.maybe_mark_dynamic(node_graph, 0)
        expected = torch.zeros(graphs).index_add(0, node_graph, values)
        assert torch.allclose(compiled(values, node_graph, graphs), expected, atol=1e-6)
    forces_like = torch.randn(7, 3, generator=generator)
    node_graph = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    assert torch.allclose(sum_per_graph(forces_like, node_graph, 3), torch.zeros(3, 3).index_add(0, node_graph, forces_like))
