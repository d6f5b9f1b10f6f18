"""``equitensor`` command line: a thin dispatcher.

Each command group lives with the code it drives and registers itself on the sub-parser:
``train``/``evaluate`` (equitensor.train.cli), ``data`` (equitensor.datasets.cli) and
``bench`` (equitensor.bench.cli).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_GROUPS = (
    "equitensor.train.cli:add_train_commands",
    "equitensor.datasets.cli:add_data_commands",
    "equitensor.bench.cli:add_bench_commands",
)


def fail(command: str, error: BaseException) -> int:
    """Report an input error of ``equitensor COMMAND`` as one message (no traceback); exit status 2.

    ``EQUITENSOR_DEBUG=1`` re-raises it for the full traceback.
    """
    if os.environ.get("EQUITENSOR_DEBUG"):
        raise error
    print(f"equitensor {command}: error: {error}", file=sys.stderr)
    print("(set EQUITENSOR_DEBUG=1 for the full traceback)", file=sys.stderr)
    return 2


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
    argv = sys.argv[1:] if argv is None else list(argv)
    # ``bench HARNESS ...``: everything after the harness name belongs to the harness's own parser.
    from .bench.cli import HARNESSES, run_harness

    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in HARNESSES:
        return run_harness(argv[1], argv[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
