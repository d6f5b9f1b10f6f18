"""What a run reports: train.log, early stopping (train.patience), TensorBoard and W&B."""

from __future__ import annotations

import sys
import types

import pytest

from equitensor.train.config import ConfigError, load_config
from equitensor.train.trainer import Trainer, seed_everything

from .test_train_loop import make_config
from .train_helpers import PairPotential, emt_graphs, save_state_dict


@pytest.fixture(scope="module")
def graphs():
    return emt_graphs(12, seed=2)


def trainer_for(config, graphs):
    seed_everything(config.train.seed)
    return Trainer(config, PairPotential(), graphs[:8], graphs[8:], save_best=save_state_dict)


def scripted_validation(trainer, losses):
    """Replace the validation pass by a fixed sequence of losses (one per evaluated epoch)."""
    sequence, measure = iter(losses), trainer.evaluate

    def evaluate(loader, desc="validate"):
        metrics, _ = measure(loader, desc)
        return metrics, next(sequence)

    trainer.evaluate = evaluate


def test_train_log_holds_what_was_printed_and_resume_appends(tmp_path, graphs, capsys):
    config = make_config(tmp_path, "train.epochs=2")
    trainer_for(config, graphs).fit()
    printed = capsys.readouterr().out.splitlines()
    logged = (tmp_path / "train.log").read_text().splitlines()
    assert printed and len(logged) == len(printed)
    for line, text in zip(logged, printed):
        assert line.endswith(" " + text) and line[:4].isdigit()  # "YYYY-mm-dd HH:MM:SS text"
    longer = make_config(tmp_path, "train.epochs=3")
    trainer_for(longer, graphs).fit(resume=tmp_path / "checkpoint.pt")
    resumed = (tmp_path / "train.log").read_text().splitlines()
    assert resumed[: len(logged)] == logged and any("resumed from" in line for line in resumed[len(logged) :])


def test_patience_stops_after_that_many_validations_without_improvement(tmp_path, graphs):
    config = make_config(tmp_path, "train.epochs=20", "train.patience=2")
    trainer = trainer_for(config, graphs)
    scripted_validation(trainer, [1.0, 0.5, 0.6, 0.55, 0.7, 0.1])
    result = trainer.fit()
    assert result.stop_reason == "patience"
    assert [row["val_loss"] for row in result.history] == [1.0, 0.5, 0.6, 0.55]
    assert result.best_val_loss == 0.5


def test_patience_counter_survives_resume(tmp_path, graphs):
    config = make_config(tmp_path, "train.epochs=3", "train.patience=2")
    trainer = trainer_for(config, graphs)
    scripted_validation(trainer, [1.0, 0.5, 0.6])
    trainer.fit()
    more = make_config(tmp_path, "train.epochs=20", "train.patience=2")
    resumed = trainer_for(more, graphs)
    scripted_validation(resumed, [0.9, 0.2])
    result = resumed.fit(resume=tmp_path / "checkpoint.pt")
    assert result.stop_reason == "patience" and len(result.history) == 4


def test_tensorboard_events_hold_the_validation_metrics(tmp_path, graphs):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = make_config(tmp_path, "train.epochs=2", "train.tensorboard=true")
    result = trainer_for(config, graphs).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("val_loss")
    assert [event.value for event in scalars] == pytest.approx([row["val_loss"] for row in result.history])
    assert [event.step for event in scalars] == [row["step"] for row in result.history]


def test_wandb_receives_config_and_metrics(tmp_path, graphs, monkeypatch):
    calls = {"log": [], "finished": False}

    class Run:
        def log(self, values, step):
            calls["log"].append((step, values))

        def finish(self):
            calls["finished"] = True

    def init(config, dir, **kwargs):
        calls["init"] = (config, dir, kwargs)
        return Run()

    fake = types.ModuleType("wandb")
    fake.init = init
    fake.__spec__ = types.SimpleNamespace(name="wandb", loader=None, submodule_search_locations=None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = make_config(tmp_path, "train.epochs=2", "train.wandb={project: demo, mode: offline}")
    result = trainer_for(config, graphs).fit()
    run_config, _, kwargs = calls["init"]
    assert kwargs == {"project": "demo", "mode": "offline"} and run_config["train"]["epochs"] == 2
    assert [step for step, _ in calls["log"]] == [row["step"] for row in result.history]
    assert calls["log"][-1][1]["val_loss"] == result.history[-1]["val_loss"] and calls["finished"]


def test_missing_logger_package_fails_at_configuration(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install wandb"):
        load_config(None, [f"train.out_dir={tmp_path}", "train.wandb={project: x}"])
    with pytest.raises(ConfigError, match="train.patience must be >= 1"):
        load_config(None, [f"train.out_dir={tmp_path}", "train.patience=0"])
