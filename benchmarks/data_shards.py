"""Build a sharded ASE-LMDB (``.aselmdb``) dataset of rattled OC20 frames for the loader benchmarks.

    python benchmarks/data_shards.py [--out /tmp/equitensor_oc20_shards] [--frames 50000] [--shards 8]

Frames are the OC20 relaxation trajectories in ``shared/data/oc20_traj`` (or ``--src``), copied
over and over with the free atoms rattled (Gaussian, ``--sigma`` Å) and the DFT labels kept as
they are: the data has OC20's sizes, elements and cells, which is what loading, neighbour lists
and collation cost depends on; the labels are not physical for the rattled copies. The output
is written to ``OUT.partial`` and renamed to ``OUT`` when complete; it is never committed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from equitensor.datasets import fixed_mask, open_dataset, write_ase_db  # noqa: E402


def default_source() -> Path:
    root = Path(
        os.environ.get("EQUITENSOR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    return root / "oc20_traj"


def rattled_frames(src: Path, n_frames: int, sigma: float, seed: int):
    """``n_frames`` frames cycling through ``src``'s frames, each copy's free atoms rattled."""
    reader = open_dataset(src)
    rng = np.random.default_rng(seed)
    for k in range(n_frames):
        atoms = reader[k % len(reader)]
        free = ~fixed_mask(atoms)
        atoms.positions[free] += sigma * rng.standard_normal((int(free.sum()), 3))
        atoms.info.update(sid=int(k), fid=int(k // len(reader)))
        yield atoms


def build_shards(
    src: Path, out: Path, n_frames: int, n_shards: int, sigma: float = 0.05, seed: int = 0
) -> Path:
    """Write ``n_shards`` ``.aselmdb`` files holding ``n_frames`` frames in total into ``out``."""
    if out.exists():
        raise SystemExit(f"{out} exists; remove it or choose another --out")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    frames = rattled_frames(src, n_frames, sigma, seed)
    for shard, size in enumerate(np.diff(np.linspace(0, n_frames, n_shards + 1).astype(int))):
        write_ase_db(partial / f"data{shard:04d}.aselmdb", (next(frames) for _ in range(size)))
    partial.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--src", type=Path, default=default_source(), help="dataset to copy (any readable format)"
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/equitensor_oc20_shards"))
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--sigma", type=float, default=0.05, help="rattle amplitude, Å")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.src.exists():
        raise SystemExit(f"source data {args.src} not found (pass --src or set EQUITENSOR_SHARED_DATA)")
    start = time.perf_counter()
    build_shards(args.src, args.out, args.frames, args.shards, args.sigma, args.seed)
    print(
        f"wrote {args.frames} frames in {args.shards} shards to {args.out} ({time.perf_counter() - start:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
