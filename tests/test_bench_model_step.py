"""Smoke test of the model-step harness: it builds, times and records a tiny model (no timing asserts)."""

import csv

import pytest
import torch

from equitensor.bench.model_step import main

from .conftest import shared_data_dir


def test_quick_run_records_a_row(tmp_path):
    if not (shared_data_dir() / "molecules" / "ethanol" / "train.xyz").exists():
        pytest.skip(f"ethanol reference data not found under {shared_data_dir()}")
    out = tmp_path / "model_step.csv"
    argv = [
        "--quick",
        "--no-mace",
        "--systems",
        "ethanol",
        "--dtypes",
        "float64",
        "--combos",
        "cg/cg",
        "--data",
        str(shared_data_dir()),
    ]
    assert main([*argv, "--max-L", "1", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and not rows[0]["error"], rows
    assert float(rows[0]["train_ms"]) > 0 and int(rows[0]["edges"]) > 0


def test_device_data_and_mace_python_are_explicit(tmp_path, monkeypatch):
    """Clear errors for CUDA without CUDA and for missing data; no mace python given -> the
    mace-torch rows record why, and no venv is created."""
    monkeypatch.delenv("EQUITENSOR_SHARED_DATA", raising=False)
    monkeypatch.delenv("EQUITENSOR_MACE_PYTHON", raising=False)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            main(["--quick", "--device", "cuda", "--data", str(tmp_path)])
    with pytest.raises(SystemExit, match="--data DIR or set EQUITENSOR_SHARED_DATA"):
        main(["--quick", "--out", str(tmp_path)])
    if not (shared_data_dir() / "molecules" / "ethanol" / "train.xyz").exists():
        pytest.skip(f"ethanol reference data not found under {shared_data_dir()}")
    monkeypatch.chdir(tmp_path)
    argv = ["--quick", "--systems", "ethanol", "--dtypes", "float32", "--max-L", "1", "--combos", "nope/nope",
            "--device", "cpu", "--data", str(shared_data_dir())]  # fmt: skip
    assert main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "model_step.csv").open()))
    assert [(r["impl"], r["conv"]) for r in rows] == [
        ("equitensor", "nope"),
        ("mace-torch", "e3nn-0.4.4"),
        ("mace-torch", "cueq"),
    ]
    assert "not registered" in rows[0]["error"]
    assert all("--mace-python" in r["error"] for r in rows[1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_step.csv"]  # no venv, no plot of no rows
