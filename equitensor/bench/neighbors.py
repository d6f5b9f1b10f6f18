"""Neighbour-list benchmark: equitensor (numba cell list) vs ASE vs matscipy.

Task: all ordered pairs within r_max with image shifts ("ijS"), float64 positions, one thread.
Systems: real OC20 slabs (from ../shared/data/oc20_traj when present, else EMT-demo-like
fcc(111) slabs built with ASE) at r_max = 6 Å, and a 10,192-atom bulk Cu cell
(fcc, a = 3.61 Å, 4-atom cubic cell repeated 14x14x13) at r_max = 5 Å.

Before timing, every implementation's edge set is checked against ASE's. Times are medians
over repeats, in the same process, so the ratios are meaningful on a noisy shared machine.
The first-call numba compile time is measured in fresh subprocesses: once with an empty
numba cache (true compile) and once with the populated on-disk cache (``cache=True`` reuse).

Usage:  equitensor bench neighbors [--quick]   (or python benchmarks/neighbors.py)
Writes neighbors.csv and neighbors.png to --out (default: the current directory) and prints a table;
OC20 frames come from --data or $EQUITENSOR_SHARED_DATA (ASE-built slabs without them).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.build import bulk, fcc111
from ase.io import read
from ase.neighborlist import neighbor_list as ase_neighbor_list

from equitensor.datasets.neighbors import neighbor_list

from .output import atomic_write, save_figure

ROOT = Path(__file__).resolve().parents[2]


def systems(data_dir: Path | None):
    """(name, atoms, r_max) benchmark cases (OC20 frames from ``data_dir/oc20_traj`` when given)."""
    cases = []
    traj = data_dir / "oc20_traj" if data_dir is not None else None
    names = ("random1447590.traj", "random1000100.traj", "random1000162.traj", "random1000151.traj")
    if traj is not None and traj.is_dir():
        for name in names:
            if (traj / name).exists():
                atoms = read(traj / name, index=-1)
                cases.append((f"OC20 {name.removesuffix('.traj')}", atoms, 6.0))
    else:
        print(
            f"note: no OC20 frames ({traj or '--data / EQUITENSOR_SHARED_DATA not given'}), using ASE-built slabs"
        )
        for size in ((2, 2, 4), (3, 3, 4), (4, 4, 5)):
            slab = fcc111("Pt", size=size, vacuum=7.0)
            cases.append((f"Pt(111) {size[0]}x{size[1]}x{size[2]} slab", slab, 6.0))
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((14, 14, 13))
    cases.append(("bulk Cu 14x14x13", cu, 5.0))
    return cases


def implementations():
    from matscipy.neighbours import neighbour_list as matscipy_neighbour_list

    return {
        "equitensor": lambda a, r: neighbor_list(a.positions, a.cell.array, a.pbc, r),
        "matscipy": lambda a, r: matscipy_neighbour_list("ijS", a, r),
        "ase": lambda a, r: ase_neighbor_list("ijS", a, r),
    }


def edge_set(i, j, S):
    return set(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), *np.asarray(S).T.tolist()))


def median_seconds(fn, repeats: int, budget_s: float) -> float:
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    return statistics.median(times)


COMPILE_SNIPPET = """
import time, numpy as np
t = time.perf_counter()
from equitensor.datasets.neighbors import neighbor_list
t_import = time.perf_counter() - t
t = time.perf_counter()
neighbor_list(np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], np.eye(3) * 3, [True] * 3, 2.0)
print(t_import, time.perf_counter() - t)
"""


def first_call_seconds(cache_dir: str | None) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run(
        [sys.executable, "-c", COMPILE_SNIPPET], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for neighbors.csv/.png")
    parser.add_argument(
        "--data", type=Path, default=os.environ.get("EQUITENSOR_SHARED_DATA"),
        help="reference data folder with oc20_traj/ (default: $EQUITENSOR_SHARED_DATA; ASE slabs without it)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    results = args.out
    repeats = 5 if args.quick else 21

    import ase
    import matscipy
    import numba

    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"ase {ase.__version__}, matscipy {matscipy.__version__}"
    )

    with tempfile.TemporaryDirectory() as empty:
        compile_s = first_call_seconds(empty)
    neighbor_list(np.zeros((1, 3)), np.eye(3), [True] * 3, 0.5)  # make sure the on-disk cache exists
    cached_s = first_call_seconds(None)
    print(
        f"numba first call: {compile_s:.2f} s with an empty cache (compile), "
        f"{cached_s:.3f} s with the on-disk cache (cache=True)\n"
    )

    impls = implementations()
    rows = []
    for name, atoms, r_max in systems(None if args.data is None else Path(args.data)):
        reference = edge_set(*impls["ase"](atoms, r_max))
        for impl, fn in impls.items():
            got = edge_set(*fn(atoms, r_max))
            if got != reference:
                raise SystemExit(f"{impl} disagrees with ASE on {name}: {len(got)} vs {len(reference)} edges")
        timings = {}
        for impl, fn in impls.items():
            budget = 20.0 if impl == "ase" else 10.0
            timings[impl] = median_seconds(lambda f=fn, a=atoms, r=r_max: f(a, r), repeats, budget)
        for impl, seconds in timings.items():
            rows.append(
                {
                    "system": name,
                    "n_atoms": len(atoms),
                    "r_max": r_max,
                    "n_edges": len(reference),
                    "method": impl,
                    "median_ms": round(seconds * 1e3, 4),
                    "ratio_vs_matscipy": round(seconds / timings["matscipy"], 3),
                }
            )

    with atomic_write(results / "neighbors.csv", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        fh.write(
            f"# numba compile (empty cache) s,{compile_s:.3f}\n# numba first call (cached) s,{cached_s:.4f}\n"
        )

    _print_table(rows, impls)
    _plot(rows, impls, results / "neighbors.png")
    print(f"\nwrote {results / 'neighbors.csv'} and {results / 'neighbors.png'}")
    return 0


def _plot(rows: list[dict], impls, path: Path) -> None:
    """Bar chart of the median times per system and implementation (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no PNG written")
        return
    names = list(dict.fromkeys(r["system"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(impls)
    for k, impl in enumerate(impls):
        values = [
            next(r["median_ms"] for r in rows if r["system"] == n and r["method"] == impl) for n in names
        ]
        ax.bar(np.arange(len(names)) + k * width, values, width, label=impl)
    ax.set_xticks(np.arange(len(names)) + width * (len(impls) - 1) / 2)
    ax.set_xticklabels(
        [f"{n}\n({next(r['n_atoms'] for r in rows if r['system'] == n)} atoms)" for n in names], fontsize=7
    )
    ax.set_yscale("log")
    ax.set_ylabel("median time per call (ms)")
    ax.set_title("ijS neighbour list, one thread (lower is better)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def _print_table(rows: list[dict], impls) -> None:
    """One line per system: each implementation's median time and equitensor / matscipy."""
    header = (
        f"{'system':<26}{'atoms':>7}{'r_max':>6}{'edges':>9}  "
        + "".join(f"{m:>13}" for m in impls)
        + "   equitensor/matscipy"
    )
    print(header)
    print("-" * len(header))
    for name in dict.fromkeys(r["system"] for r in rows):
        group = {r["method"]: r for r in rows if r["system"] == name}
        first = next(iter(group.values()))
        cells = "".join(f"{group[m]['median_ms']:>10.3f} ms" for m in impls)
        print(
            f"{name:<26}{first['n_atoms']:>7}{first['r_max']:>6.1f}{first['n_edges']:>9}  {cells}"
            f"   {group['equitensor']['ratio_vs_matscipy']:.2f}"
        )
