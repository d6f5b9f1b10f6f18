"""``equitensor bench tp | expressivity | model | neighbors``: each forwards its arguments to a harness."""

from __future__ import annotations

import argparse
import importlib

HARNESSES = {
    "tp": ("equitensor.bench.microbench", "tensor-product runtime vs L per backend (SISO/SIMO/MIMO, MACE conv)"),
    "expressivity": ("equitensor.bench.expressivity", "expressivity table (dimension of reachable bilinear maps)"),
    "model": ("equitensor.bench.model_step", "MACE training/inference step per backend combination"),
    "neighbors": ("equitensor.bench.neighbors", "neighbour-list runtime vs ASE and matscipy"),
}


def add_bench_commands(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="run a benchmark harness (writes CSV + PNG to benchmarks/results/)")
    harnesses = bench.add_subparsers(dest="harness", metavar="HARNESS", required=True)
    for name, (module, help_text) in HARNESSES.items():
        sub = harnesses.add_parser(name, help=help_text, add_help=False)
        sub.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the harness (--help for its own)")
        sub.set_defaults(func=_run, harness_module=module)


def _run(args) -> int:
    return int(importlib.import_module(args.harness_module).main(args.args) or 0)
