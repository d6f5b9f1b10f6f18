"""A converted MACE-MP-0-medium architecture through ``EquitensorCalculator`` vs mace-torch's ``MACECalculator``.

Run in an environment with mace-torch and equitensor installed side by side:

    OMP_WAIT_POLICY=passive PYTHONPATH=. python benchmarks/mace_calculator_speed.py --threads 2 --repeats 10

The model is mace-torch's ``ScaleShiftMACE`` with MACE-MP-0-medium's hyper-parameters
(128x0e+128x1o, max_ell 3, correlation 3, r_max 6, two interactions, residual first interaction,
89 elements) and random weights (the published weights cannot be downloaded here); it is converted
with ``from_mace`` (cg conv, cg product basis). Each calculator computes energy, forces and stress
of the same 33-atom OC20 slab (``../shared/data/oc20_traj/random1000100.traj``) with the graph
rebuilt on every call, as in a relaxation; the two are timed in turn, call by call, so that load
from other jobs hits both alike. Energies and forces are checked to agree first.

Writes ``benchmarks/results/mace_calculator_speed.csv`` (median ms per call and the speed-up,
per dtype) and ``.png``, and prints a table.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase.calculators.calculator import all_changes  # noqa: E402
from ase.io import read  # noqa: E402

from equitensor.atomic import write_csv  # noqa: E402
from equitensor.datasets.cache import atomic_write_bytes  # noqa: E402
from equitensor.models import EquitensorCalculator, from_mace  # noqa: E402

SLAB = REPO.parent / "shared" / "data" / "oc20_traj" / "random1000100.traj"


def mp0_medium_architecture(num_elements: int):
    """mace-torch ``ScaleShiftMACE`` with MACE-MP-0-medium's hyper-parameters, random weights."""
    from e3nn import o3
    from mace import modules

    torch.manual_seed(0)
    return modules.ScaleShiftMACE(
        r_max=6.0, num_bessel=10, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2, num_elements=num_elements, hidden_irreps=o3.Irreps("128x0e+128x1o"),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(num_elements), avg_num_neighbors=61.96,
        atomic_numbers=list(range(1, num_elements + 1)), correlation=3, gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64], atomic_inter_scale=0.8, atomic_inter_shift=0.0,
    )  # fmt: skip


def time_calls(calculators: dict, atoms, repeats: int) -> dict:
    """Median seconds per ``calculate`` (energy, forces, stress), the calculators taken in turn."""
    times = {name: [] for name in calculators}
    for name, calc in calculators.items():  # warm-up (numba compilation, first allocations)
        calc.calculate(atoms.copy(), ["energy", "forces", "stress"], all_changes)
    for _ in range(repeats):
        for name, calc in calculators.items():
            start = time.perf_counter()
            calc.calculate(atoms.copy(), ["energy", "forces", "stress"], all_changes)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    from mace.calculators import MACECalculator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--elements", type=int, default=89, help="elements of the model (MACE-MP-0: 89)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "mace_calculator_speed.csv"))
    args = parser.parse_args(argv)
    if not SLAB.is_file():
        raise SystemExit(f"reference slab not found at {SLAB} (../shared/data)")
    torch.set_num_threads(args.threads)
    atoms = read(SLAB, 0)
    rows = []
    for dtype in args.dtypes.split(","):
        torch.set_default_dtype(getattr(torch, dtype))
        mace_model = mp0_medium_architecture(args.elements)
        calculators = {
            "mace-torch": MACECalculator(models=mace_model, device="cpu", default_dtype=dtype),
            "equitensor": EquitensorCalculator(from_mace(mace_model), device="cpu", default_dtype=dtype),
        }
        results = {}
        for name, calc in calculators.items():
            calc.calculate(atoms.copy(), ["energy", "forces"], all_changes)
            results[name] = (calc.results["energy"], calc.results["forces"])
        force_diff = float(np.abs(results["mace-torch"][1] - results["equitensor"][1]).max())
        energy_diff = abs(results["mace-torch"][0] - results["equitensor"][0])
        medians = time_calls(calculators, atoms, args.repeats)
        rows.append({
            "dtype": dtype, "atoms": len(atoms), "threads": args.threads, "repeats": args.repeats,
            "mace_torch_ms": round(1e3 * medians["mace-torch"], 2), "equitensor_ms": round(1e3 * medians["equitensor"], 2),
            "speedup": round(medians["mace-torch"] / medians["equitensor"], 2),
            "max_abs_energy_diff_eV": f"{energy_diff:.2e}", "max_abs_force_diff_eV_per_A": f"{force_diff:.2e}",
        })  # fmt: skip
        print(rows[-1], flush=True)
    out = Path(args.out)
    write_csv(out, rows)
    plot(rows, out.with_suffix(".png"))
    return 0


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["mace_torch_ms"] for r in rows], 0.4, label="mace-torch MACECalculator")
    ax.bar(x + 0.2, [r["equitensor_ms"] for r in rows], 0.4, label="equitensor (from_mace, cg)")
    for i, r in enumerate(rows):
        ax.text(i + 0.2, r["equitensor_ms"], f"{r['speedup']}x", ha="center", va="bottom")
    ax.set_xticks(x, [r["dtype"] for r in rows])
    ax.set_ylabel("ms per energy+forces+stress call")
    ax.set_title(f"MACE-MP-0-medium architecture, {rows[0]['atoms']}-atom OC20 slab, {rows[0]['threads']} threads")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120)
    atomic_write_bytes(path, lambda fh: fh.write(buffer.getvalue()))


if __name__ == "__main__":
    raise SystemExit(main())
