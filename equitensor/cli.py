"""``equitensor`` command line: a thin dispatcher.

Each command group lives with the code it drives and registers itself on the sub-parser:
``train``/``evaluate`` (equitensor.train.cli), ``data`` (equitensor.datasets.cli) and
``bench`` (equitensor.bench.cli).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_GROUPS = (
    "equitensor.train.cli:add_train_commands",
    "equitensor.datasets.cli:add_data_commands",
    "equitensor.bench.cli:add_bench_commands",
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="equitensor",
        description="Equivariant interatomic potentials with interchangeable tensor-product backends.",
    )
    parser.add_argument("--version", action="version", version=f"equitensor {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for spec in COMMAND_GROUPS:
        module, function = spec.split(":")
        getattr(importlib.import_module(module), function)(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Harness options (``bench tp --L 1..6``) belong to the harness's own parser.
    args, unknown = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if unknown:
        if getattr(args, "harness_module", None) is None:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.args = list(args.args) + unknown
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
