"""MACE training steps timed round-robin (one step of each implementation in turn), for busy machines.

Task as ``equitensor bench model`` (MACE defaults, float32, 1 thread, energy + forces with
``create_graph``, loss, backward, Adam amsgrad); one warm-up step each, then ``--rounds`` rounds.

* ``methods``: four models in this process, cg convolution, product basis ``cg`` with
  ``method="naive"`` (the previous execution) and the default, ``gaunt_grid`` with
  ``method="grid"`` and the default;
* ``mace``: equitensor cg/cg and mace-torch 0.3.16 (``--mace-python``) in two worker processes
  that take turns, one step each per round.

    OMP_WAIT_POLICY=passive PYTHONPATH=. python benchmarks/step_roundrobin.py methods --system oc20 --max-L 2
    OMP_WAIT_POLICY=passive PYTHONPATH=. python benchmarks/step_roundrobin.py mace --system oc20 --mace-python ../mace-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from equitensor.bench.model_step import (  # noqa: E402
    MACE_DEFAULTS,
    average_neighbors,
    shared_data_dir,
    system_files,
)

METHODS = {
    "cg/cg naive": ("cg", {"method": "naive"}),
    "cg/cg": ("cg", {}),
    "cg/gaunt_grid grid": ("gaunt_grid", {"method": "grid"}),
    "cg/gaunt_grid": ("gaunt_grid", {}),
}


def spec_for(system: str, max_l: int) -> dict:
    # the repository's layout: the reference data beside it unless $EQUITENSOR_SHARED_DATA says otherwise
    data = shared_data_dir(os.environ.get("EQUITENSOR_SHARED_DATA") or str(REPO.parent / "shared" / "data"))
    files = system_files(system, data, 3 if system == "oc20" else 16)
    hidden = "128x0e+128x1o" if max_l == 1 else "128x0e+128x1o+128x2e"
    return dict(files=files, config=dict(MACE_DEFAULTS, hidden_irreps=hidden), threads=1, dtype="float32",
                avg_num_neighbors=average_neighbors(files, MACE_DEFAULTS["r_max"]), conv="cg", product="cg",
                repeats=1)  # fmt: skip


def build_step(spec: dict, product: str, options: dict):
    """One training step of an equitensor MACE (the harness' task) as a closure."""
    import torch
    from torch_geometric.data import Batch

    from equitensor.bench.model_step import load_frames, training_step
    from equitensor.models import MACE, atoms_to_graph

    torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    torch.set_default_dtype(dtype)
    torch.manual_seed(0)
    frames = load_frames(spec["files"])
    batch = Batch.from_data_list([atoms_to_graph(a, spec["config"]["r_max"], dtype) for a in frames])
    e_ref = torch.tensor([a.info["ref_energy"] for a in frames], dtype=dtype)
    f_ref = torch.cat([torch.tensor(a.arrays["ref_forces"], dtype=dtype) for a in frames])
    zs = sorted({int(z) for a in frames for z in a.numbers})
    model = MACE(atomic_numbers=zs, avg_num_neighbors=spec["avg_num_neighbors"], conv_backend=spec["conv"],
                 product_backend=product, product_options=options, **spec["config"]).to(dtype)  # fmt: skip
    return training_step(model, batch, e_ref, f_ref)


def round_robin(steps: dict, rounds: int) -> dict[str, list[float]]:
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(step())
    return times


def timed(step):
    def run():
        start = time.perf_counter()
        step()
        return 1e3 * (time.perf_counter() - start)

    return run


def serve(step) -> None:
    """Worker: one warm-up step, then one timed step per ``go`` line on stdin."""
    step()
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        start = time.perf_counter()
        step()
        print(f"T {1e3 * (time.perf_counter() - start)}", flush=True)


def mace_worker(spec: dict) -> None:
    sys.path.insert(0, str(REPO / "equitensor" / "bench"))
    import _mace_worker

    def run_steps(step, repeats):  # the worker's own timing loop, replaced by serve()
        if step.__name__ == "train":
            serve(step)
        return [0.0]

    _mace_worker.run_steps = run_steps
    _mace_worker.main(spec)


class Remote:
    def __init__(self, command: list[str]):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()

    def _read(self) -> str:
        while line := self.proc.stdout.readline():
            if line.startswith(("READY", "T ")):
                return line
        raise RuntimeError(f"worker {self.proc.args[:2]} exited")

    def __call__(self) -> float:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return float(self._read().split()[1])

    def close(self) -> None:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.close()
        self.proc.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("methods", "mace", "worker"))
    parser.add_argument("--system", default="oc20", choices=("oc20", "ethanol"))
    parser.add_argument("--max-L", type=int, default=1, choices=(1, 2))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mace-python", default=str(REPO.parent / "mace-venv" / "bin" / "python"))
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode == "worker":
        spec = json.loads(args.spec)
        if args.side == "mace":
            mace_worker(spec)
        else:
            serve(build_step(spec, "cg", {}))
        return 0
    spec = spec_for(args.system, args.max_L)
    if args.mode == "methods":
        steps = {
            name: timed(build_step(spec, product, options)) for name, (product, options) in METHODS.items()
        }
        times = round_robin(steps, args.rounds)
    else:
        worker = [str(Path(__file__).resolve()), "worker", "--spec", json.dumps(spec), "--side"]
        remotes = {
            "equitensor cg/cg": Remote([sys.executable, *worker, "equitensor"]),
            "mace-torch": Remote([args.mace_python, "-W", "ignore", *worker, "mace"]),
        }
        times = {name: [] for name in remotes}
        for _ in range(args.rounds):
            for name, remote in remotes.items():
                times[name].append(remote())
        for remote in remotes.values():
            remote.close()
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    print(
        f"# {args.system} max_L {args.max_L} float32, 1 thread, median of {args.rounds} round-robin training steps"
    )
    for name, ts in times.items():
        print(f"{name:<22}{medians[name]:9.0f} ms   all: {[round(t) for t in ts]}")
    if args.mode == "methods":
        print(f"cg product, after vs before: {medians['cg/cg naive'] / medians['cg/cg']:.2f}x; "
              f"gaunt_grid product, after vs before: {medians['cg/gaunt_grid grid'] / medians['cg/gaunt_grid']:.2f}x; "
              f"cg/gaunt_grid vs cg/cg: {medians['cg/cg'] / medians['cg/gaunt_grid']:.2f}x (before: "
              f"{medians['cg/cg naive'] / medians['cg/gaunt_grid grid']:.2f}x)")  # fmt: skip
    else:
        print(f"speed-up vs mace-torch: {medians['mace-torch'] / medians['equitensor cg/cg']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
