"""Smoke test of the model-step harness: it builds, times and records a tiny model (no timing asserts)."""

import csv

import pytest

from equitensor.bench.model_step import main

from .conftest import shared_data_dir


def test_quick_run_records_a_row(tmp_path):
    if not (shared_data_dir() / "molecules" / "ethanol" / "train.xyz").exists():
        pytest.skip(f"ethanol reference data not found under {shared_data_dir()}")
    out = tmp_path / "model_step.csv"
    argv = ["--quick", "--no-mace", "--systems", "ethanol", "--dtypes", "float64", "--combos", "cg/cg"]
    assert main([*argv, "--max-L", "1", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and not rows[0]["error"], rows
    assert float(rows[0]["train_ms"]) > 0 and int(rows[0]["edges"]) > 0
