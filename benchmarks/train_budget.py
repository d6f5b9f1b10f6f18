"""Equal wall-clock training budget: equitensor vs mace-torch on rMD17 ethanol.

Both codes train the same MACE architecture with the same hyper-parameters on
``../shared/data/molecules/ethanol/train.xyz`` (1000 configurations, 5 % held out for validation)
for the same wall-clock budget, then the best-by-validation model of each is evaluated on
``test_MD.xyz`` with the same metric code (energy MAE per atom, force-component MAE).

* equitensor: ``python -m equitensor train --config ethanol`` with ``train.time_limit_minutes``.
* mace-torch: ``mace_run_train`` from its own venv (``--mace-venv``, default ``../mace-venv``, never a dependency of
  equitensor), ``--max_num_epochs`` huge; this script stops it when the budget is spent, then
  re-runs it with ``--restart_latest --max_num_epochs <epoch of its best checkpoint>`` so that
  it writes that checkpoint as a model file without training further.

The two runs execute **at the same time**, each with ``--threads`` torch threads, so that load
from other processes on a shared machine hits both equally. Each clock starts when training
starts (after data loading and statistics), which mace-torch logs as "Started training" and
equitensor's time limit measures from the start of its loop.

    python benchmarks/train_budget.py --minutes 5

Writes ``benchmarks/results/train_budget.csv`` and prints a table; paste it into
docs/benchmarks_train.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "molecules" / "ethanol"
#: mace-torch's own venv (never a dependency): $EQUITENSOR_MACE_VENV, else ../mace-venv beside the repo.
MACE_VENV = Path(os.environ.get("EQUITENSOR_MACE_VENV", REPO.parent / "mace-venv"))
E0S = {1: -13.568422383046626, 6: -1025.2770951782686, 8: -2035.5709809589698}

MACE_EVAL = r"""
import json, sys, numpy as np, torch
from ase.io import read
from mace.calculators import MACECalculator
model, test, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
calc = MACECalculator(model_paths=model, device="cpu", default_dtype=dtype)
de, df = [], []
for atoms in read(test, ":"):
    e_true = atoms.get_potential_energy(); f_true = atoms.get_forces(apply_constraint=False)
    atoms.calc = calc
    de.append((atoms.get_potential_energy() - e_true) / len(atoms))
    df.append((atoms.get_forces() - f_true).ravel())
df = np.concatenate(df)
print(json.dumps({"energy_per_atom_mae": float(np.mean(np.abs(de))), "forces_mae": float(np.mean(np.abs(df))),
                  "energy_per_atom_rmse": float(np.sqrt(np.mean(np.square(de)))),
                  "forces_rmse": float(np.sqrt(np.mean(np.square(df)))), "frames": len(de)}))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="training budget per code (wall clock)")
    p.add_argument(
        "--mace-venv", default=str(MACE_VENV), help="venv with mace-torch 0.3.16 (never a dependency)"
    )
    p.add_argument("--train", default=str(DATA / "train.xyz"))
    p.add_argument("--test", default=str(DATA / "test_MD.xyz"))
    p.add_argument("--out-dir", default=str(REPO / "runs" / "train_budget"))
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "train_budget.csv"))
    p.add_argument("--hidden-irreps", default="32x0e+32x1o")
    p.add_argument("--max-ell", type=int, default=3)
    p.add_argument("--correlation", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--forces-weight", type=float, default=1000.0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=1, help="torch threads per code")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--only", choices=("equitensor", "mace"), default=None, help="run one code only")
    return p.parse_args(argv)


def common_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return env


def run_equitensor(args, out: Path) -> dict:
    run_dir = out / "equitensor"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [
        f"data.train={args.train}", "data.test=null", "data.val_fraction=0.05",
        f"model.hidden_irreps={args.hidden_irreps}", f"model.max_ell={args.max_ell}",
        f"model.correlation={args.correlation}", "model.radial_MLP=[64,64,64]",
        f"train.batch_size={args.batch_size}", f"optim.lr={args.lr}", f"loss.forces_weight={args.forces_weight}",
        "loss.energy_weight=1.0", f"train.dtype={args.dtype}", f"train.seed={args.seed}", "train.epochs=100000",
        f"train.time_limit_minutes={args.minutes}", f"train.out_dir={run_dir}", "train.progress=never",
        "optim.scheduler=plateau", "train.ema=true", "train.ema_decay=0.99",
    ]  # fmt: skip
    env = common_env(args.threads)
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "equitensor", "train", "--config", "ethanol", "--set", *overrides]
    start = time.perf_counter()
    log = run_dir.with_suffix(".log")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        rc = subprocess.call(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    if rc:
        raise RuntimeError(f"equitensor training failed (rc {rc}); see {log}")
    wall = time.perf_counter() - start
    text = log.read_text()
    epochs = len(re.findall(r"^epoch \d+/", text, flags=re.M))
    steps = re.findall(r"step (\d+)", text)
    metrics = evaluate_equitensor(run_dir / "best_model.pt", args.test, args.dtype)
    return {
        "code": "equitensor",
        "epochs": epochs,
        "steps": int(steps[-1]) if steps else 0,
        "wall_s": wall,
        **metrics,
    }


def evaluate_equitensor(model_path: Path, test: str, dtype: str) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from equitensor.models import load_model
    from equitensor.train.evaluate import evaluate_model
    from equitensor.train.setup import open_graphs

    model = load_model(model_path)
    metrics, rows = evaluate_model(
        model, open_graphs(test, model.r_max, {}), 50, "cpu", getattr(torch, dtype)
    )
    return {
        k: metrics[k] for k in ("energy_per_atom_mae", "energy_per_atom_rmse", "forces_mae", "forces_rmse")
    } | {"frames": len(rows)}


def run_mace(args, out: Path) -> dict:
    run_dir = out / "mace"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = [
        str(Path(args.mace_venv) / "bin" / "mace_run_train"), "--name", "ethanol", "--work_dir", str(run_dir),
        "--train_file", args.train, "--valid_fraction", "0.05", "--E0s", str(E0S),
        "--energy_key", "energy", "--forces_key", "forces",
        "--model", "ScaleShiftMACE", "--hidden_irreps", args.hidden_irreps, "--max_ell", str(args.max_ell),
        "--correlation", str(args.correlation), "--num_interactions", "2", "--r_max", "5.0",
        "--num_radial_basis", "8", "--num_cutoff_basis", "5", "--MLP_irreps", "16x0e", "--radial_MLP", "[64,64,64]",
        "--batch_size", str(args.batch_size), "--valid_batch_size", "50", "--lr", str(args.lr),
        "--energy_weight", "1.0", "--forces_weight", str(args.forces_weight), "--ema", "--ema_decay", "0.99",
        "--amsgrad", "--scheduler", "ReduceLROnPlateau", "--default_dtype", args.dtype, "--device", "cpu",
        "--seed", str(args.seed), "--eval_interval", "1", "--error_table", "PerAtomMAE",
    ]  # fmt: skip
    env = common_env(args.threads)
    log_path = run_dir.with_suffix(".log")
    start = time.perf_counter()
    started_training = None
    epochs = 0
    with open(log_path, "w") as log:
        proc = subprocess.Popen(base + ["--max_num_epochs", "1000000"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
        deadline = [None]

        def watchdog():
            while proc.poll() is None:
                if deadline[0] is not None and time.perf_counter() > deadline[0]:
                    os.killpg(proc.pid, signal.SIGTERM)
                    return
                time.sleep(0.5)

        threading.Thread(target=watchdog, daemon=True).start()
        for line in proc.stdout:
            log.write(line)
            if started_training is None and "Started training" in line:
                started_training = time.perf_counter()
                deadline[0] = started_training + 60 * args.minutes
            match = re.search(r"Epoch (\d+):", line)
            if match:
                epochs = int(match.group(1)) + 1
        proc.wait()
    wall = time.perf_counter() - (started_training or start)
    if epochs == 0:
        raise RuntimeError(f"mace-torch finished no epoch within the budget; see {log_path}")
    # write the best checkpoint as a model without further training: mace-torch restarts at the
    # checkpoint's own epoch number, so --max_num_epochs <that number> runs no training epoch
    checkpoints = sorted((run_dir / "checkpoints").glob("*_epoch-*.pt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise RuntimeError(f"mace-torch wrote no checkpoint within the budget; see {log_path}")
    best_epoch = re.search(r"_epoch-(\d+)\.pt$", checkpoints[-1].name).group(1)
    with open(log_path, "a") as log:
        rc = subprocess.call(base + ["--max_num_epochs", best_epoch, "--restart_latest"], env=env,
                             stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    model = run_dir / "ethanol.model"
    if rc or not model.is_file():
        raise RuntimeError(f"mace-torch could not write its model (rc {rc}); see {log_path}")
    result = subprocess.run([str(Path(args.mace_venv) / "bin" / "python"), "-c", MACE_EVAL, str(model), args.test, args.dtype],
                            env=env, capture_output=True, text=True)  # fmt: skip
    if result.returncode:
        raise RuntimeError(f"mace-torch evaluation failed:\n{result.stderr[-3000:]}")
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    steps_per_epoch = -(-int(round(0.95 * 1000)) // args.batch_size)
    return {
        "code": "mace-torch",
        "epochs": epochs,
        "steps": epochs * steps_per_epoch,
        "wall_s": wall,
        **metrics,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    for path in (args.train, args.test):
        if not Path(path).is_file():
            print(f"data not found: {path} (needs ../shared/data/molecules/ethanol)", file=sys.stderr)
            return 2
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = {"equitensor": run_equitensor, "mace": run_mace}
    if args.only:
        jobs = {args.only: jobs[args.only]}
    results, errors = {}, {}

    def target(name, fn):
        try:
            results[name] = fn(args, out)
        except Exception as exc:  # reported below, the other run continues
            errors[name] = exc

    threads = [threading.Thread(target=target, args=(name, fn)) for name, fn in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, exc in errors.items():
        print(f"{name}: FAILED: {exc}", file=sys.stderr)
    rows = [results[k] for k in ("equitensor", "mace") if k in results]
    print(f"\nethanol, {args.minutes:g} min budget each (concurrent, {args.threads} thread(s) each), "
          f"{args.hidden_irreps} max_ell {args.max_ell} correlation {args.correlation}, batch {args.batch_size}, "
          f"{args.dtype}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")  # fmt: skip
    print(
        f"{'code':<11} {'epochs':>6} {'steps':>6} {'E MAE meV/atom':>15} {'F MAE meV/Å':>12} {'F RMSE meV/Å':>13}"
    )
    for r in rows:
        print(f"{r['code']:<11} {r['epochs']:>6} {r['steps']:>6} {1e3 * r['energy_per_atom_mae']:>15.2f} "
              f"{1e3 * r['forces_mae']:>12.1f} {1e3 * r['forces_rmse']:>13.1f}")  # fmt: skip
    if rows:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["minutes", "threads", *rows[0].keys()])
            writer.writeheader()
            for r in rows:
                writer.writerow({"minutes": args.minutes, "threads": args.threads, **r})
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
