"""``equitensor bench expressivity``: path table and expressivity (Xie et al.) of every backend.

Prints, for each registered backend (default: all of ``available_backends()``), the numerically measured expressivity
in the MIMO setting (multiplicity 1, natural parity, X = Y up to L, Z up to 2L) for L = 1..6
next to the analytic count, and a path table (which (l1 p1) x (l2 p2) -> (l3 p3) couplings are
non-zero, listed in ``paths`` and verified numerically) for inputs with both parities.
Writes ``expressivity.csv`` and ``expressivity_paths.csv`` to ``--out`` (default: the current directory).
The measurement method is described in :mod:`equitensor.expressivity`.
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import torch

from .. import expressivity as ex
from ..ops.backends.registry import available_backends
from .output import atomic_write, write_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="equitensor bench expressivity", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--lmax", type=int, default=6, help="largest L of the expressivity table (default 6)")
    parser.add_argument("--path-lmax", type=int, default=2, help="L of the path table (default 2)")
    parser.add_argument(
        "--backends", nargs="+", default=None, help="backend names (default: every registered backend)"
    )
    parser.add_argument(
        "--out", "--output", dest="output", type=Path, default=Path("."), help="folder for the CSV files"
    )
    args = parser.parse_args(argv)
    args.backends = args.backends or available_backends()

    print(
        f"# equitensor expressivity | torch {torch.__version__} | {platform.machine()} | rank rtol {ex.RANK_RTOL:g}"
    )
    rows, ok = [], True
    header = f"{'backend':<11}" + "".join(f"{'L=' + str(l):>12}" for l in range(1, args.lmax + 1))
    print("\nExpressivity (numerical / analytic), MIMO, multiplicity 1:")
    print(header)
    for backend in args.backends:
        cells = []
        for lmax in range(1, args.lmax + 1):
            start = time.perf_counter()
            result = ex.expressivity(backend, lmax)
            ok &= result.matches
            cells.append(f"{result.dimension}/{result.analytic}{'' if result.matches else '!'}")
            rows.append(
                {"backend": backend, "L": lmax, "setting": "MIMO", "dimension": result.dimension,
                 "analytic": result.analytic, "num_parameters": result.num_parameters,
                 "matches": result.matches, "seconds": round(time.perf_counter() - start, 3)}
            )  # fmt: skip
        print(f"{backend:<11}" + "".join(f"{c:>12}" for c in cells), flush=True)

    path_rows = []
    print(
        f"\nPath table, inputs {ex.all_parity_irreps(args.path_lmax)} (both parities), outputs up to {2 * args.path_lmax}:"
    )
    for backend in args.backends:
        table = ex.path_table(backend, args.path_lmax)
        path_rows.extend(table)
        consistent = all(r.listed == r.nonzero for r in table)
        ok &= consistent
        lost = [f"{r.ir_in1}x{r.ir_in2}->{r.ir_out}" for r in table if not r.nonzero]
        print(f"{backend:<11} realises {sum(r.nonzero for r in table):>3} of {len(table)} parity-allowed couplings"
              f"{'' if consistent else ' (paths DISAGREE with the numerics!)'}"
              f"{'; lost: ' + ', '.join(lost[:6]) + (' ...' if len(lost) > 6 else '') if lost else ''}")  # fmt: skip

    write_csv(args.output / "expressivity.csv", rows)
    with atomic_write(args.output / "expressivity_paths.csv", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["backend", "ir_in1", "ir_in2", "ir_out", "listed_in_paths", "numerically_nonzero"])
        writer.writerows([r.backend, r.ir_in1, r.ir_in2, r.ir_out, r.listed, r.nonzero] for r in path_rows)
    print(f"\nwrote {args.output / 'expressivity.csv'} and {args.output / 'expressivity_paths.csv'}")
    return 0 if ok else 1
