"""Trainer behaviour on a small pair potential: overfitting, exact resume, outputs."""

from __future__ import annotations

import csv

import pytest
import torch

from equitensor.train.config import load_config
from equitensor.train.trainer import Trainer, seed_everything

from .train_helpers import Crash, PairPotential, crash_at_step, emt_graphs, save_state_dict


def make_config(out_dir, *overrides):
    return load_config(
        None,
        [
            "train.batch_size=4",
            "train.dtype=float64",
            f"train.out_dir={out_dir}",
            "train.progress=never",
            "train.plot=false",
            "optim.scheduler=constant",
            *overrides,
        ],
    )


def run(config, graphs, resume=None, n_train=12):
    seed_everything(config.train.seed)
    model = PairPotential()
    trainer = Trainer(config, model, graphs[:n_train], graphs[n_train:], save_best=save_state_dict)
    return trainer.fit(resume=resume), model


@pytest.fixture(scope="module")
def graphs():
    return emt_graphs(16, seed=1)


def test_overfits_eight_frames(tmp_path, graphs):
    config = make_config(
        tmp_path, "train.epochs=100", "train.ema=false", "optim.lr=0.02", "train.batch_size=8"
    )
    seed_everything(0)
    trainer = Trainer(config, PairPotential(), graphs[:8], graphs[:8], save_best=save_state_dict)
    result = trainer.fit()
    first, last = result.step_losses[0], result.step_losses[-1]
    assert last < first / 10, f"loss fell only from {first:.4g} to {last:.4g}"
    assert result.history[-1]["val_forces_mae"] < result.history[0]["val_forces_mae"] / 3


def test_resume_reproduces_uninterrupted_run(tmp_path, graphs):
    settings = (
        "train.epochs=3",
        "train.checkpoint_every_steps=2",
        "optim.scheduler=cosine",
        "optim.warmup_steps=2",
    )
    full, full_model = run(make_config(tmp_path / "full", *settings), graphs)
    assert len(full.step_losses) == 9  # 12 frames / batch 4 * 3 epochs

    # crash during step 5 (mid epoch 2); the last checkpoint is the one of step 4
    config = make_config(tmp_path / "part", *settings)
    seed_everything(config.train.seed)
    trainer = Trainer(config, PairPotential(), graphs[:12], graphs[12:], save_best=save_state_dict)
    crash_at_step(trainer, 4)
    with pytest.raises(Crash):
        trainer.fit()
    resumed, resumed_model = run(config, graphs, resume=tmp_path / "part")
    assert resumed.step_losses == full.step_losses  # bitwise: same batches, same states
    assert [row["val_loss"] for row in resumed.history] == [row["val_loss"] for row in full.history]
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


def test_max_steps_stops_and_resume_extends(tmp_path, graphs):
    part, _ = run(make_config(tmp_path, "train.epochs=3", "train.max_steps=5"), graphs)
    assert part.stop_reason == "max_steps" and part.global_step == 5
    more, _ = run(make_config(tmp_path, "train.epochs=3", "train.max_steps=7"), graphs, resume=tmp_path)
    assert more.global_step == 7 and len(more.step_losses) == 7
    assert more.step_losses[:5] == part.step_losses


def test_outputs_and_csv(tmp_path, graphs):
    config = make_config(tmp_path, "train.epochs=2", "train.plot=true")
    result, _ = run(config, graphs)
    for name in ("checkpoint.pt", "best_model.pt", "metrics.csv", "learning_curve.png"):
        assert (tmp_path / name).is_file(), name
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in (
        "val_energy_mae",
        "val_energy_per_atom_rmse",
        "val_forces_mae",
        "val_forces_cosine",
        "val_efwt",
    ):
        assert key in rows[0]
    assert result.stop_reason == "epochs"


def test_global_batch_must_split_over_ranks(tmp_path, graphs):
    from equitensor.train.distributed import DistContext

    config = make_config(tmp_path, "train.batch_size=3")
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        Trainer(config, PairPotential(), graphs[:8], graphs[8:], dist=DistContext(world_size=2))
