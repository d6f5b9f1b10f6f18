"""``equitensor data ...`` subcommands: ``info``, ``convert``, ``make-demo``.

The package's ``cli.py`` owns the top-level parser and calls :func:`add_data_commands` on its
subparsers object. Each registered parser sets ``func``: call ``args.func(args)``, which returns
an exit status. ``python -m equitensor.datasets.cli data info PATH`` runs them standalone.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

__all__ = ["add_data_commands", "main"]


def _reader_options(args: argparse.Namespace, path: str) -> dict:
    from .dispatch import pickle_permission

    # the permission matters only where values are pickles (legacy LMDB); other readers take no such option
    opts = pickle_permission(path, getattr(args, "allow_pickle", False))
    if getattr(args, "referenced", False):
        opts["referenced"] = True
    for key in ("energy_key", "forces_key", "stress_key"):
        if getattr(args, key, None):
            opts[key] = getattr(args, key)
    return opts


def _reports_errors(command: str):
    """Wrap a ``data`` subcommand so bad input prints its message (no traceback) and exits 2."""

    def wrap(func):
        @functools.wraps(func)
        def run(args: argparse.Namespace) -> int:
            from equitensor.cli import fail

            from .errors import DatasetError

            try:
                return func(args)
            except (DatasetError, OSError) as error:
                return fail(f"data {command}", error)

        return run

    return wrap


@_reports_errors("info")
def cmd_info(args: argparse.Namespace) -> int:
    """Print frame count, atoms per frame, elements, energy and force statistics."""
    from .dispatch import detect_format, open_dataset
    from .statistics import summarize

    path = args.path[0] if len(args.path) == 1 else args.path  # several paths: one dataset
    reader = open_dataset(path, require=(), **_reader_options(args, path))
    print(f"{' '.join(args.path)}  [{detect_format(path)}, {type(reader).__name__}, {len(reader)} frames]")
    frames = (
        reader if args.max_frames is None else (reader[i] for i in range(min(args.max_frames, len(reader))))
    )
    summary = summarize(frames, progress=not args.no_progress)
    if args.max_frames is not None and args.max_frames < len(reader):
        print(f"(statistics over the first {args.max_frames} of {len(reader)} frames)")
    for line in summary.lines():
        print(line)
    e0s = getattr(reader, "isolated_atom_energies", None)
    if e0s:
        print(
            "isolated-atom energies E0 (eV): " + ", ".join(f"Z={z}: {e:.6f}" for z, e in sorted(e0s.items()))
        )
    return 0


@_reports_errors("convert")
def cmd_convert(args: argparse.Namespace) -> int:
    """Convert SRC to DST (format from --format or DST's name)."""
    from .convert import convert

    n = convert(
        args.src[0] if len(args.src) == 1 else args.src,
        args.dst,
        fmt=args.format,
        frames_per_file=args.frames_per_file,
        progress=not args.no_progress,
        **_reader_options(args, args.src),
    )
    print(f"wrote {n} frames to {args.dst}")
    return 0


def cmd_make_demo(args: argparse.Namespace) -> int:
    """Generate (or reuse) the EMT demo dataset and print where it is."""
    from .demo import demo_dataset_path, make_demo_dataset

    out = Path(args.out) if args.out else demo_dataset_path(args.frames, args.seed, create=False)
    make_demo_dataset(out, n_frames=args.frames, seed=args.seed)
    print(out)
    return 0


def _add_read_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow reading legacy PyG LMDBs (pickles execute code: trusted files only)",
    )
    parser.add_argument("--referenced", action="store_true", help="S2EF: use energy - reference energy")
    parser.add_argument("--energy-key", help="extxyz: key of the energy (default 'energy')")
    parser.add_argument("--forces-key", help="extxyz: key of the forces (default 'forces')")
    parser.add_argument("--stress-key", help="extxyz: key of the stress (default 'stress')")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_data_commands(subparsers) -> argparse.ArgumentParser:
    """Register ``data info|convert|make-demo`` on an argparse subparsers object; returns ``data``."""
    from .convert import OUTPUT_FORMATS
    from .formats import FORMATS

    data = subparsers.add_parser(
        "data",
        help="inspect, convert and generate datasets",
        description="Formats (name: files; r = readable, w = writable): "
        + "; ".join(f"{f.name} [{'r' if f.reader else ''}{'w' if f.writer else ''}]: {f.description}" for f in FORMATS)
        + ". PATH may be a folder of files (e.g. .aselmdb shards), a glob or several paths: one dataset.",
    )
    sub = data.add_subparsers(dest="data_command", required=True)

    info = sub.add_parser("info", help="frame count, atoms, elements, energy and force statistics")
    info.add_argument("path", nargs="+", help="dataset path(s), folder(s) or glob(s), read as one dataset")
    info.add_argument("--max-frames", type=int, default=None, help="scan only the first N frames")
    _add_read_options(info)
    info.set_defaults(func=cmd_info)

    conv = sub.add_parser("convert", help="convert a dataset to another format")
    conv.add_argument("src", nargs="+", help="dataset path(s), folder(s) or glob(s), read as one dataset")
    conv.add_argument("dst")
    conv.add_argument(
        "--format",
        choices=sorted(OUTPUT_FORMATS),
        default=None,
        help="output format (default: from DST's name; no suffix = S2EF folder)",
    )
    conv.add_argument("--frames-per-file", type=int, default=5000, help="S2EF output: frames per file")
    _add_read_options(conv)
    conv.set_defaults(func=cmd_convert)

    demo = sub.add_parser("make-demo", help="generate the EMT adsorbate-on-slab demo dataset")
    demo.add_argument("--out", default=None, help="output folder (default: the cache, see docs/datasets.md)")
    demo.add_argument("--frames", type=int, default=2000, help="number of frames (default 2000)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_make_demo)
    return data


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m equitensor.datasets.cli data ...``."""
    parser = argparse.ArgumentParser(prog="equitensor")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
