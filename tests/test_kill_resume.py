"""Kill anywhere: ``equitensor train`` SIGKILLed at random moments leaves only loadable files, and
``--resume`` then finishes with exactly the metrics and best model of an uninterrupted run.

A tiny MACE on 16 EMT frames, checkpointed every step, in a subprocess killed at seeded random
delays (a chain of kills, each restart resuming the previous one).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT

from equitensor.datasets.extxyz import write_extxyz
from equitensor.models import load_model
from equitensor.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
KILLS = 3
SEED = 20261205

CONFIG = {
    "model": {
        "r_max": 3.0, "max_ell": 1, "hidden_irreps": "4x0e+4x1o", "correlation": 2, "num_interactions": 1,
        "radial_MLP": [8], "MLP_irreps": "4x0e", "num_bessel": 4,
    },
    "train": {
        "epochs": 4, "batch_size": 4, "val_batch_size": 4, "checkpoint_every_steps": 1, "threads": 1,
        "progress": "never", "dtype": "float64", "seed": 7,
    },
    "optim": {"scheduler": "cosine", "lr": 0.01},
}  # fmt: skip


def _frames(n: int, seed: int):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.numbers[int(rng.integers(4))] = 79
        atoms.positions += 0.1 * rng.standard_normal(atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    return frames


def _train(workdir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "equitensor", "train", "--config", str(workdir / "run.yaml"), *extra],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait_for_training(process: subprocess.Popen) -> None:
    """Read the run's output until the training loop starts (its "training N parameters" line)."""
    for line in process.stdout:
        if line.startswith("training "):
            return
    raise AssertionError(f"the run ended before training (exit status {process.wait()})")


def _finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    return out


def _metrics(out_dir: Path) -> list[dict]:
    with open(out_dir / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(handle)]


def _check_every_file_loads(out_dir: Path) -> None:
    """Each run file present is complete: the killed process never leaves a torn file behind."""
    from PIL import Image

    for path in out_dir.iterdir():
        if path.name.endswith(".tmp"):
            continue  # an unfinished write; removed by the next start
        if path.name == "config.yaml":
            assert isinstance(yaml.safe_load(path.read_text()), dict)
        elif path.name == "checkpoint.pt":
            load_checkpoint(path)
        elif path.name == "best_model.pt":
            load_model(path)
        elif path.name == "metrics.csv":
            rows = list(csv.DictReader(open(path, newline="")))
            assert rows and all(None not in row.values() and "" not in row.values() for row in rows)
        elif path.name == "learning_curve.png":
            Image.open(path).verify()
        elif path.name == "train.log":  # append-only: every complete line is time-stamped text
            lines = path.read_text(encoding="utf-8").split("\n")[:-1]
            assert all(line[:4].isdigit() for line in lines)
        else:
            raise AssertionError(f"unexpected file in out_dir: {path.name}")


def _workdir(base: Path, name: str) -> Path:
    workdir = base / name
    workdir.mkdir()
    config = {
        **CONFIG,
        "data": {"train": str(base / "train.xyz"), "val": str(base / "val.xyz")},
        "train": {**CONFIG["train"], "out_dir": str(workdir / "run")},
    }
    (workdir / "run.yaml").write_text(yaml.safe_dump(config))
    return workdir


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_matches_uninterrupted_run(tmp_path):
    write_extxyz(tmp_path / "train.xyz", _frames(12, 0))
    write_extxyz(tmp_path / "val.xyz", _frames(4, 1))

    reference = _workdir(tmp_path, "reference")
    start = time.perf_counter()
    process = _train(reference)
    _wait_for_training(process)
    training_start = time.perf_counter()
    for line in process.stdout:  # the training loop ends with the last epoch's line
        if line.startswith(f"epoch {CONFIG['train']['epochs']}/"):
            break
    training = time.perf_counter() - training_start
    _finish(process)
    duration = time.perf_counter() - start

    killed = _workdir(tmp_path, "killed")
    out_dir = killed / "run"
    rng = np.random.default_rng(SEED)
    for kill in range(KILLS):
        resume = ["--resume"] if (out_dir / "checkpoint.pt").exists() else ["--overwrite"]
        process = _train(killed, *resume)
        if kill == 0:  # anywhere, start-up included
            time.sleep(rng.uniform(0.0, 1.0) * duration)
        else:  # within the training loop, where the run files are written
            _wait_for_training(process)
            time.sleep(rng.uniform(0.0, 1.0) * training)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        if out_dir.exists():
            _check_every_file_loads(out_dir)
    resume = ["--resume"] if (out_dir / "checkpoint.pt").exists() else ["--overwrite"]
    _finish(_train(killed, *resume))

    assert not list(out_dir.glob("*.tmp"))
    assert _metrics(out_dir) == _metrics(reference / "run")
    expected, got = load_model(reference / "run" / "best_model.pt"), load_model(out_dir / "best_model.pt")
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(got.state_dict()[name], tensor, rtol=0, atol=0)
    assert load_checkpoint(out_dir / "checkpoint.pt")["progress"]["step_losses"] == load_checkpoint(
        reference / "run" / "checkpoint.pt"
    )["progress"]["step_losses"]
