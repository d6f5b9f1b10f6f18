"""``equitensor bench tp | expressivity | model | neighbors``: each forwards its arguments to a harness."""

from __future__ import annotations

import importlib

HARNESSES = {
    "tp": (
        "equitensor.bench.microbench",
        "tensor-product runtime vs L per backend (SISO/SIMO/MIMO, MACE conv)",
    ),
    "expressivity": (
        "equitensor.bench.expressivity",
        "expressivity table (dimension of reachable bilinear maps)",
    ),
    "model": ("equitensor.bench.model_step", "MACE training/inference step per backend combination"),
    "neighbors": ("equitensor.bench.neighbors", "neighbour-list runtime vs ASE and matscipy"),
}


def add_bench_commands(subparsers) -> None:
    bench = subparsers.add_parser(
        "bench", help="run a benchmark harness (writes CSV + PNG to --out, default the current directory)"
    )
    harnesses = bench.add_subparsers(dest="harness", metavar="HARNESS", required=True)
    for name, (_, help_text) in HARNESSES.items():
        # Only listed here: equitensor.cli hands "bench NAME ..." straight to run_harness.
        harnesses.add_parser(name, help=f"{help_text} (bench {name} --help for its options)")


def run_harness(name: str, argv: list[str]) -> int:
    """Run harness ``name`` with its own command-line arguments."""
    module, _ = HARNESSES[name]
    return int(importlib.import_module(module).main(argv) or 0)
