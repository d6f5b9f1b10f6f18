"""The model registry: ``model.name`` in the training config and ``model`` in the model file.

A second architecture, defined and registered here and nowhere else, is trained by
``equitensor train``, saved, loaded and evaluated through the same code as MACE; files in the
MACE-only format (``equitensor.mace/1``, no ``model`` field) still load.
"""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk
from torch_geometric.data import Batch

from equitensor import __version__
from equitensor.cli import main
from equitensor.models import (
    MACE, EquitensorCalculator, get_model_class, load_model, register_model, registered_models, save_model,
)
from equitensor.models import registry
from equitensor.models.graph import check_graph
from equitensor.models.io import ModelFileError
from equitensor.models.outputs import derivatives, edge_vectors, gradient_leaves, graph_tensors, strained
from equitensor.train import setup

from .test_models import single_thread  # noqa: F401
from .train_helpers import emt_graphs

pytestmark = pytest.mark.usefixtures("default_float64")


class ExponentialPairModel(torch.nn.Module):
    """``E = sum_i e0(Z_i) + 1/2 sum_edges sum_k w_k exp(-k |r_ij|) f_cut(|r_ij|)``: a second
    architecture with nothing in common with MACE but the registry's contract."""

    config_keys = ()  # reads only the common model.* keys and model.extra

    def __init__(self, atomic_numbers, atomic_energies, r_max: float, num_terms: int = 3):
        super().__init__()
        self.config = dict(
            atomic_numbers=[int(z) for z in atomic_numbers], atomic_energies=[float(e) for e in atomic_energies],
            r_max=float(r_max), num_terms=int(num_terms),
        )  # fmt: skip
        self.atomic_numbers, self.r_max = self.config["atomic_numbers"], self.config["r_max"]
        self.weights = torch.nn.Parameter(0.1 * torch.randn(num_terms))
        self.register_buffer("e0", torch.tensor(self.config["atomic_energies"]))
        self.register_buffer("decay", torch.arange(1, num_terms + 1, dtype=torch.get_default_dtype()))

    @classmethod
    def for_training(cls, settings, statistics):
        return cls(
            statistics.elements, [statistics.atomic_energies[z] for z in statistics.elements], settings.r_max,
            **settings.extra,
        )  # fmt: skip

    def forward(self, batch, compute_forces=True, compute_stress=False, training=False, check_inputs=True):
        graph = graph_tensors(batch)
        onehot = (graph.atomic_numbers[:, None] == torch.tensor(self.atomic_numbers)).to(graph.pos.dtype)
        if check_inputs:
            check_graph(graph, torch.where(onehot.any(dim=1), onehot.argmax(dim=1), -1), self.atomic_numbers)
        graph, displacement = gradient_leaves(graph, compute_forces, compute_stress)
        positions, cell = strained(graph, displacement)
        lengths = torch.linalg.vector_norm(edge_vectors(graph, positions, cell), dim=1)  # [n_edges]
        cutoff = 0.5 * (torch.cos(torch.pi * lengths / self.r_max) + 1.0)
        pair = (self.weights * torch.exp(-lengths[:, None] * self.decay)).sum(dim=1) * cutoff
        node_energy = onehot @ self.e0 + 0.5 * pair.new_zeros(len(positions)).index_add(
            0, graph.edge_index[1], pair
        )
        energy = node_energy.new_zeros(cell.shape[0]).index_add(0, graph.node_graph, node_energy)
        results = derivatives(energy, graph, displacement, compute_forces, compute_stress, training)
        return {"energy": energy, "node_energy": node_energy, **results}


@pytest.fixture
def pair_model_registered():
    register_model("exp_pair", ExponentialPairModel)
    yield "exp_pair"
    registry._registered.pop("exp_pair")


def write_frames(path, n_frames: int):
    """``n_frames`` EMT-labelled Cu/Au cells as extxyz (the CLI reads files)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for graph in emt_graphs(n_frames, r_max=4.0):
        atoms = Atoms(numbers=graph.atomic_numbers.numpy(), positions=graph.pos.numpy(),
                      cell=graph.cell.reshape(3, 3).numpy(), pbc=True)  # fmt: skip
        atoms.calc = SinglePointCalculator(atoms, energy=float(graph.energy), forces=graph.forces.numpy())
        frames.append(atoms)
    write(path, frames)
    return path


def small_mace() -> MACE:
    torch.manual_seed(0)
    return MACE(
        atomic_numbers=[29, 79], atomic_energies=[-1.0, -2.0], r_max=4.0, num_bessel=4, max_ell=1,
        hidden_irreps="4x0e+4x1o", correlation=2, num_interactions=1, radial_MLP=[8], MLP_irreps="4x0e",
    )  # fmt: skip


def test_mace_is_the_default_registered_model():
    assert "mace" in registered_models() and get_model_class("mace") is MACE
    assert registry.model_name(small_mace()) == "mace"


def test_unknown_name_lists_the_registered_models():
    with pytest.raises(ValueError, match=r"unknown model 'nope'; registered models: .*mace"):
        get_model_class("nope")


def test_a_name_taken_by_another_class_is_refused(pair_model_registered):
    register_model(pair_model_registered, ExponentialPairModel)  # the same class again: fine
    with pytest.raises(ValueError, match="a different model is already registered as 'exp_pair'"):
        register_model(pair_model_registered, MACE)


def test_file_in_the_mace_format_still_loads(tmp_path):
    """A file in the MACE-only format: ``equitensor.mace/1``, no ``model`` field."""
    model = small_mace()
    path = tmp_path / "old.pt"
    payload = {"format": "equitensor.mace/1", "version": __version__, "config": model.config,
               "state_dict": model.state_dict()}  # fmt: skip
    torch.save(payload, path)
    loaded = load_model(path)
    batch = Batch.from_data_list(emt_graphs(2))
    assert isinstance(loaded, MACE) and loaded.config == model.config
    assert torch.equal(loaded(batch)["forces"], model(batch)["forces"])


def test_file_of_an_unregistered_model_names_it(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "equitensor.model/1", "model": "painn", "config": {}, "state_dict": {}}, path)
    with pytest.raises(ModelFileError, match=r"architecture 'painn', which is not registered.*mace"):
        load_model(path)


def test_file_without_a_model_name_is_refused(tmp_path):
    path = tmp_path / "nameless.pt"
    torch.save({"format": "equitensor.model/1", "config": {}, "state_dict": {}}, path)
    with pytest.raises(ModelFileError, match="names no model architecture"):
        load_model(path)


def test_saving_an_unregistered_class_is_refused(tmp_path):
    model = ExponentialPairModel([29], [0.0], 4.0)
    with pytest.raises(ValueError, match="ExponentialPairModel is not a registered model.*register_model"):
        save_model(model, tmp_path / "model.pt")


def test_unknown_model_name_in_the_config_is_refused_before_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(setup, "prepare_data", lambda *a, **k: pytest.fail("data read for a refused run"))
    assert main(["train", "--set", "model.name=nope", f"train.out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "model.name: unknown model 'nope'; registered models:" in err and "mace" in err


def test_mace_settings_for_another_model_are_refused(tmp_path, monkeypatch, capsys, pair_model_registered):
    monkeypatch.setattr(setup, "prepare_data", lambda *a, **k: pytest.fail("data read for a refused run"))
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  name: exp_pair\n  hidden_irreps: 8x0e\n")
    assert main(["train", "--config", str(config), "--set", f"train.out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "model 'exp_pair' does not read model.hidden_irreps; remove it or give" in err
    # the packaged configs are MACE's: their model settings are refused for another model too
    assert main(["train", "--config", "demo", "--set", "model.name=exp_pair", f"train.out_dir={tmp_path}"]) == 2
    assert "model 'exp_pair' does not read model.max_ell, model.hidden_irreps" in capsys.readouterr().err


def test_second_architecture_trains_saves_loads_and_evaluates(tmp_path, capsys, pair_model_registered):
    data = write_frames(tmp_path / "train.xyz", 12)
    out = tmp_path / "run"
    config = tmp_path / "config.yaml"  # fairchem's spelling: model: name:
    config.write_text("model:\n  name: exp_pair\n  r_max: 4.0\n  extra: {num_terms: 4}\n")
    rc = main([
        "train", "--config", str(config), "--set", f"data.train={data}", "data.val_fraction=0.25",
        "train.epochs=3", "train.batch_size=3", "train.dtype=float64", "train.ema=false", "train.plot=false",
        "train.progress=never", "optim.lr=0.05", f"train.out_dir={out}",
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr()
    payload = torch.load(out / "best_model.pt", weights_only=True)
    assert (payload["format"], payload["model"]) == ("equitensor.model/1", "exp_pair")
    model = load_model(out / "best_model.pt")
    assert isinstance(model, ExponentialPairModel) and model.config["num_terms"] == 4
    assert torch.equal(model.weights, payload["state_dict"]["weights"])
    torch.manual_seed(123)  # train.seed: the weights the run started from
    initial = 0.1 * torch.randn(4, dtype=torch.float64)
    assert model.weights.dtype == torch.float64 and not torch.equal(model.weights, initial)
    assert (out / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs
    # the saved model is the trained function: stress and forces through the shared outputs module
    batch = Batch.from_data_list(emt_graphs(2, seed=5))
    result = model(batch, compute_stress=True)
    assert result["forces"].shape == (8, 3) and result["stress"].shape == (2, 3, 3)
    with pytest.raises(ValueError, match=r"atom 0 is O \(Z=8\), which this model does not know"):
        oxygen = emt_graphs(1)[0]
        oxygen.atomic_numbers = torch.tensor([8, 29, 29, 29])
        model(Batch.from_data_list([oxygen]))
    # the ASE calculator runs it from the file, with the stress of the shared outputs module
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = EquitensorCalculator(out / "best_model.pt")
    assert atoms.get_forces().shape == (4, 3) and atoms.get_stress().shape == (6,)
    aluminium = bulk("Al", "fcc", a=4.05)
    aluminium.calc = EquitensorCalculator(out / "best_model.pt")
    with pytest.raises(ValueError, match="which this model does not know; allowed elements: Cu \\(29\\), Au"):
        aluminium.get_potential_energy()
    assert main(["evaluate", "--model", str(out / "best_model.pt"), "--data", str(data),
                 "--out", str(tmp_path / "predictions.csv")]) == 0  # fmt: skip
    assert (tmp_path / "predictions.csv").read_text().count("\n") == 13  # header + 12 frames


def test_init_e0s_data_from_a_model_without_atomic_energies_is_refused(tmp_path, pair_model_registered):
    from equitensor.train.config import ConfigError, DataConfig, ModelConfig
    from equitensor.train.finetune import foundation_model
    from equitensor.train.setup import compute_statistics

    path = tmp_path / "pair.pt"
    save_model(ExponentialPairModel([29, 79], [-1.0, -2.0], 4.0), path)
    stats = compute_statistics(emt_graphs(4, r_max=4.0), DataConfig())
    kept = foundation_model(ModelConfig(init_from=str(path)), stats)
    assert isinstance(kept, ExponentialPairModel)
    with pytest.raises(ConfigError, match=r"init_e0s: data needs .*atomic_energies.*ExponentialPairModel.*init_e0s: keep"):
        foundation_model(ModelConfig(init_from=str(path), init_e0s="data"), stats)
