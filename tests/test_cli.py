"""``equitensor train`` / ``equitensor evaluate`` end to end on the demo data, and their input errors."""

from __future__ import annotations

import csv

import pytest
import torch

from equitensor.cli import main

TINY = [
    "data.demo_frames=48",
    "data.max_train_frames=24",
    "model.hidden_irreps=8x0e+8x1o",
    "model.max_ell=1",
    "model.correlation=2",
    "model.num_interactions=1",
    "model.radial_MLP=[16]",
    "model.r_max=3.5",
    "train.epochs=1",
    "train.batch_size=8",
    "optim.scheduler=constant",
]


@pytest.fixture
def demo_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path / "cache"))
    previous = torch.get_default_dtype()
    yield tmp_path
    torch.set_default_dtype(previous)


@pytest.mark.slow
def test_train_then_evaluate_on_demo_data(demo_cache, capsys):
    out = demo_cache / "run"
    rc = main(["train", "--set", *TINY, f"train.out_dir={out}"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "mean-predictor baseline (val)" in text and "mean baseline (val)" in text
    for name in ("config.yaml", "checkpoint.pt", "best_model.pt", "metrics.csv", "learning_curve.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 1 and float(rows[0]["val_forces_mae"]) > 0

    val_dir = next((demo_cache / "cache" / "demo").glob("*")) / "val"
    predictions = demo_cache / "pred.csv"
    rc = main(
        [
            "evaluate",
            "--model",
            str(out / "best_model.pt"),
            "--data",
            str(val_dir),
            "--option",
            "referenced=true",
            "--out",
            str(predictions),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "forces_mae" in text and "efwt" in text
    frames = list(csv.DictReader(open(predictions)))
    assert len(frames) > 0 and {"energy_pred", "forces_mae", "efwt"} <= set(frames[0])
    assert predictions.with_suffix(".extxyz").is_file() and (demo_cache / "pred_parity.png").is_file()
    rc = main(["evaluate", "--model", str(out / "best_model.pt"), "--data", str(val_dir), "--option",
               "referenced=true", "--out", str(predictions.with_name("few.csv")), "--max-frames", "3"])  # fmt: skip
    assert rc == 0 and len(list(csv.DictReader(open(predictions.with_name("few.csv"))))) == 3


def test_unknown_key_is_reported_with_suggestion(demo_cache, capsys):
    rc = main(["train", "--set", "optim.lrr=0.1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown config key 'optim.lrr'; did you mean 'optim.lr'?" in err


def test_missing_dataset_is_named(demo_cache, capsys):
    missing = demo_cache / "nowhere" / "train.xyz"
    rc = main(["train", "--set", f"data.train={missing}", f"train.out_dir={demo_cache / 'run'}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"data.train: dataset not found: {missing}" in err


def test_disallowed_element_is_named(demo_cache, capsys, tmp_path):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for k, numbers in enumerate([[1, 1], [1, 1], [1, 8], [1, 1]]):
        atoms = Atoms(numbers=numbers, positions=[[0, 0, 0], [0, 0, 0.75 + 0.01 * k]])
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 - k, forces=[[0, 0, 0.1], [0, 0, -0.1]])
        frames.append(atoms)
    path = tmp_path / "frames.xyz"
    write(path, frames)
    rc = main(
        [
            "train",
            "--set",
            f"data.train={path}",
            "data.elements=[H]",
            "data.val_fraction=0.25",
            f"train.out_dir={tmp_path / 'run'}",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{path}, frame 2: element O (Z=8) is not allowed (data.elements = H)" in err


def test_missing_checkpoint_for_resume(demo_cache, capsys):
    rc = main(["train", "--resume", str(demo_cache / "none.pt")])
    assert rc == 2
    assert "checkpoint not found" in capsys.readouterr().err
