"""Fine-tuning: ``model.init_from`` starts from the foundation model's predictions, ``model.init_e0s``,
``train.freeze`` keeps parameters fixed, and the bad inputs of the issue give clear errors."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from equitensor.cli import main
from equitensor.models import MACE, save_model
from equitensor.train.config import ConfigError, ModelConfig, load_config
from equitensor.train.finetune import foundation_model, freeze_parameters
from equitensor.train.setup import build_model, compute_statistics

from .test_models import single_thread  # noqa: F401
from .train_helpers import emt_graphs

pytestmark = pytest.mark.usefixtures("default_float64")

ELEMENTS = [1, 6, 8, 29, 79]


def foundation(tmp_path):
    torch.manual_seed(0)
    model = MACE(
        atomic_numbers=ELEMENTS, atomic_energies=[-1.0, -2.0, -3.0, -4.0, -5.0], r_max=4.0, num_bessel=4,
        hidden_irreps="4x0e+4x1o", max_ell=2, correlation=2, radial_MLP=[8], MLP_irreps="4x0e",
        atomic_inter_scale=1.2, atomic_inter_shift=0.1,
    )  # fmt: skip
    path = tmp_path / "foundation.pt"
    save_model(model, path)
    return model, path


def stats_of(graphs, **data):
    from equitensor.train.config import DataConfig

    return compute_statistics(graphs, DataConfig(**data))


def test_init_from_starts_from_the_same_predictions(tmp_path):
    model, path = foundation(tmp_path)
    graphs = emt_graphs(3, r_max=4.0)
    started = build_model(ModelConfig(init_from=str(path)), stats_of(graphs))
    batch = Batch.from_data_list(graphs)
    ref, out = model(batch), started(batch)
    assert torch.equal(out["energy"], ref["energy"]) and torch.equal(out["forces"], ref["forces"])


def test_init_e0s_data_replaces_the_training_elements_e0s(tmp_path):
    _, path = foundation(tmp_path)
    stats = stats_of(emt_graphs(8, r_max=4.0), e0s={"Cu": -10.0, "Au": -20.0})
    assert stats.elements == [29, 79]
    started = build_model(ModelConfig(init_from=str(path), init_e0s="data"), stats)
    assert started.atomic_energies.atomic_energies.tolist() == [-1.0, -2.0, -3.0, -10.0, -20.0]
    kept = build_model(ModelConfig(init_from=str(path)), stats)
    assert kept.atomic_energies.atomic_energies.tolist() == [-1.0, -2.0, -3.0, -4.0, -5.0]


def test_init_from_a_model_without_the_training_elements_is_refused(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "copper_only.pt"
    save_model(MACE(atomic_numbers=[29], hidden_irreps="2x0e", max_ell=1, correlation=1, radial_MLP=[4]), path)
    with pytest.raises(ConfigError, match=r"does not know Au \(79\).*remove those frames"):
        foundation_model(ModelConfig(init_from=str(path)), stats_of(emt_graphs(6, r_max=4.0)))


def test_pickled_model_file_needs_the_callers_permission(tmp_path):
    path = tmp_path / "pickled.model"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ConfigError, match="--allow-pickle"):
        foundation_model(ModelConfig(init_from=str(path)), stats_of(emt_graphs(2, r_max=4.0)))
    with pytest.raises(ConfigError, match="unknown config key .model.trust_pickle"):  # no file can grant it
        load_config(None, ["model.trust_pickle=true"])


def test_frozen_parameters_do_not_change_in_training_steps(tmp_path):
    model, _ = foundation(tmp_path)
    frozen = freeze_parameters(model, ["node_embedding", "interactions.0.*"])
    assert "node_embedding.weight" in frozen and all(n.startswith(("node_", "interactions.0.")) for n in frozen)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    batch = Batch.from_data_list(emt_graphs(4, r_max=4.0))
    for _ in range(3):
        optimizer.zero_grad()
        out = model(batch, training=True)
        ((out["energy"] - batch.energy) ** 2).mean().add((out["forces"] - batch.forces).pow(2).mean()).backward()
        optimizer.step()
    for name, parameter in model.named_parameters():
        changed = not torch.equal(parameter, before[name])
        assert changed == (name not in frozen), name


def test_freeze_pattern_that_matches_nothing_is_refused(tmp_path):
    model, _ = foundation(tmp_path)
    with pytest.raises(ConfigError, match=r"'interaction.0' matches no parameter; modules: .*interactions.0"):
        freeze_parameters(model, ["interaction.0"])


@pytest.mark.slow
def test_cli_fine_tunes_with_frozen_modules_and_records_the_source(tmp_path, monkeypatch, capsys):
    """``equitensor train --set model.init_from=... train.freeze=[...]`` end to end on EMT frames."""
    import yaml
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from equitensor.models import load_model

    from .test_cli import TINY

    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path / "cache"))
    model, path = foundation(tmp_path)
    frames = []
    for graph in emt_graphs(16, r_max=4.0):
        atoms = Atoms(numbers=graph.atomic_numbers.numpy(), positions=graph.pos.numpy(),
                      cell=graph.cell.reshape(3, 3).numpy(), pbc=True)  # fmt: skip
        atoms.calc = SinglePointCalculator(atoms, energy=float(graph.energy), forces=graph.forces.numpy())
        frames.append(atoms)
    write(tmp_path / "train.xyz", frames)
    out = tmp_path / "run"
    settings = [s for s in TINY if not s.startswith(("model.", "data.demo", "data.max"))]
    rc = main([
        "train", "--set", *settings, f"data.train={tmp_path / 'train.xyz'}", "data.val_fraction=0.25",
        "data.elements=[Cu, Au]", f"model.init_from={path}", "model.r_max=4.0", "train.freeze=[node_embedding, 'interactions.0.*']",
        "train.ema=false", "train.dtype=float64", f"train.out_dir={out}",
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().out
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["init_from"] == str(path)
    best = load_model(out / "best_model.pt")
    reference = model.state_dict()
    for name, value in best.state_dict().items():
        if name.startswith(("node_embedding.", "interactions.0.")):
            assert torch.equal(value.to(reference[name].dtype), reference[name]), name
