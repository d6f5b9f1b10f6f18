"""``torch.compile`` (inductor) against eager for the MACE model: E+F inference and a training step.

    OMP_WAIT_POLICY=passive python benchmarks/compile_speed.py --threads 1 --repeats 20 --out benchmarks/results

The model has MACE's default hyper-parameters (128x0e+128x1o, max_ell 3, correlation 3, r_max 5,
8 Bessel functions, two interactions, radial MLP [64, 64, 64], 16x0e readout MLP), random weights,
float32, for the elements of the OC20 frames used. Inference: energy and forces of one 33-atom
OC20 slab (``random1000100.traj``, frame 0), as an MD step or a relaxation step calls the model.
Training: energy + force loss (forces with ``create_graph``), backward and an Adam step, on a batch
of the first frames of ``--train-systems`` OC20 trajectories. Compiled means
``equitensor.models.compile_model(model)`` (``fullgraph=True``, atom and edge counts dynamic).

Eager and compiled calls alternate call by call, so load from other jobs hits both alike; the
compiled outputs are checked against eager before timing. Compile times are cold (the script
points inductor at a fresh cache folder). Writes
``<out>/compile_speed.csv`` (median ms per call, speed-up, compile seconds) and prints a table.

What compiling can gain is bounded: it removes Python and dispatch overhead and fuses the
elementwise ops between kernels, but the equitensor custom ops (numba kernels, opaque to
inductor) and the GEMMs run the same code either way. ``kernel_share`` is their share of an eager
call's self CPU time (``equitensor::*`` ops, their autograd nodes, and ``mm``/``bmm``/``addmm``,
from ``torch.profiler`` over a few calls; the profiler's own per-op cost falls on the many small
ops, so the share is if anything low), and ``bound = 1 / kernel_share`` the speed-up that
compiling would reach if everything else cost nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
if __name__ == "__main__":  # compile times are cold: a fresh inductor cache, not the user's
    import tempfile

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="equitensor-compile-speed-")

import torch  # noqa: E402
from ase.io import read  # noqa: E402
from torch_geometric.data import Batch  # noqa: E402

from equitensor.bench.model_step import shared_data_dir  # noqa: E402
from equitensor.atomic import write_csv  # noqa: E402
from equitensor.models import MACE, atoms_to_graph, compile_model  # noqa: E402

SLAB = "random1000100.traj"
#: MACE's default hyper-parameters (mace-torch ``run_train`` defaults for a MACE model).
MACE_DEFAULTS = dict(
    r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3, hidden_irreps="128x0e+128x1o",
    correlation=3, num_interactions=2, MLP_irreps="16x0e", radial_MLP=[64, 64, 64],
)  # fmt: skip
FIELDS = [
    "combo", "task", "systems", "atoms", "threads", "eager_ms", "compiled_ms", "speedup", "compile_s",
    "kernel_share", "bound", "max_force_diff",
]  # fmt: skip
#: ops whose code compiling does not change: GEMMs and the equitensor custom ops with their autograd nodes
KERNEL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")
KERNEL_PREFIXES = ("equitensor::", "GeneratedBackwardFor_equitensor")


def frames(data_dir: Path, count: int) -> list:
    """The first frame of the slab trajectory, then of the next ``count - 1`` trajectories."""
    paths = sorted((data_dir / "oc20_traj").glob("*.traj"))
    paths = [data_dir / "oc20_traj" / SLAB] + [p for p in paths if p.name != SLAB]
    if len(paths) < count:
        raise SystemExit(f"{data_dir / 'oc20_traj'} holds {len(paths)} trajectories; --train-systems {count} needs more")
    return [read(p, 0) for p in paths[:count]]


def build_model(combo: str, atoms_list: list, avg_num_neighbors: float) -> MACE:
    conv, product = combo.split("/")
    elements = sorted({int(z) for atoms in atoms_list for z in atoms.numbers})
    torch.manual_seed(0)
    model = MACE(
        atomic_numbers=elements, avg_num_neighbors=avg_num_neighbors, conv_backend=conv, product_backend=product, **MACE_DEFAULTS
    )
    return model.float()


def batch_of(atoms_list: list) -> Batch:
    return Batch.from_data_list([atoms_to_graph(a, MACE_DEFAULTS["r_max"], torch.float32) for a in atoms_list])


def inference_step(run, batch):
    return lambda: run(batch)


def training_step(run, model, optimizer, batch):
    def step():
        optimizer.zero_grad(set_to_none=True)
        out = run(batch, training=True)
        loss = ((out["energy"] - batch.energy) ** 2).mean() + ((out["forces"] - batch.forces) ** 2).mean()
        loss.backward()
        optimizer.step()
        return out

    return step


def alternate(steps: dict, repeats: int) -> dict:
    """Median seconds per call of each step, the steps taken in turn."""
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def kernel_share(step, calls: int = 3) -> float:
    """Share of ``step``'s self CPU time spent in GEMMs and equitensor custom ops (profiled)."""
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(calls):
            step()
    events = prof.key_averages()
    kernels = sum(e.self_cpu_time_total for e in events if e.key in KERNEL_OPS or e.key.startswith(KERNEL_PREFIXES))
    return kernels / sum(e.self_cpu_time_total for e in events)


def first_call(step) -> tuple[float, dict]:
    start = time.perf_counter()
    out = step()
    return time.perf_counter() - start, out


def measure(combo: str, task: str, atoms_list: list, threads: int, repeats: int) -> dict:
    batch = batch_of(atoms_list)
    edges_per_atom = batch.edge_index.shape[1] / batch.num_nodes
    model = build_model(combo, atoms_list, avg_num_neighbors=edges_per_atom)
    compiled = compile_model(model)
    if task == "inference":
        model.eval()
        eager, fast = inference_step(model, batch), inference_step(compiled, batch)
    else:
        model.train()
        batch.energy = torch.randn(batch.num_graphs)
        batch.forces = torch.randn(batch.num_nodes, 3)
        # lr 0: the weights stay put, so eager and compiled time the same function every call
        optimizer = torch.optim.Adam(model.parameters(), lr=0.0)
        eager, fast = training_step(model, model, optimizer, batch), training_step(compiled, model, optimizer, batch)
    _, reference = first_call(eager)
    compile_seconds, out = first_call(fast)
    force_diff = float((out["forces"] - reference["forces"]).detach().abs().max())
    scale = max(1.0, float(reference["forces"].detach().abs().max()))
    if force_diff > 1e-3 * scale:
        raise SystemExit(f"{combo} {task}: compiled forces differ from eager by {force_diff:.2e}")
    medians = alternate({"eager": eager, "compiled": fast}, repeats)
    share = kernel_share(eager)
    return {
        "combo": combo, "task": task, "systems": len(atoms_list), "atoms": batch.num_nodes, "threads": threads,
        "eager_ms": f"{medians['eager'] * 1e3:.2f}", "compiled_ms": f"{medians['compiled'] * 1e3:.2f}",
        "speedup": f"{medians['eager'] / medians['compiled']:.3f}", "compile_s": f"{compile_seconds:.1f}",
        "kernel_share": f"{share:.3f}", "bound": f"{1 / share:.3f}",
        "max_force_diff": f"{force_diff:.2e}",
    }  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--combos", default="cg/cg", help="comma-separated conv/product backends (default cg/cg)")
    parser.add_argument("--tasks", default="inference,training")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--train-systems", type=int, default=4, help="OC20 systems in the training batch")
    parser.add_argument("--data", default=None, help="shared data folder (default: $EQUITENSOR_SHARED_DATA, else ../shared/data)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for compile_speed.csv (default: current directory)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    data_dir = shared_data_dir(args.data or os.environ.get("EQUITENSOR_SHARED_DATA") or str(REPO.parent / "shared" / "data"))
    slab = frames(data_dir, 1)
    train_batch = frames(data_dir, args.train_systems)
    rows = []
    for combo in args.combos.split(","):
        for task in args.tasks.split(","):
            torch._dynamo.reset()
            row = measure(combo, task, slab if task == "inference" else train_batch, args.threads, args.repeats)
            rows.append(row)
            print(
                f"{combo:22s} {task:9s} {row['atoms']:>4} atoms  eager {row['eager_ms']:>9s} ms  compiled "
                f"{row['compiled_ms']:>9s} ms  {float(row['speedup']):.2f}x  (compile {row['compile_s']} s; "
                f"kernels {float(row['kernel_share']):.0%} of eager, bound {float(row['bound']):.2f}x)",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "compile_speed.csv", rows, FIELDS)
    print(f"wrote {args.out / 'compile_speed.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
