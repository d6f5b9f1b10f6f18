"""MIMO fwd+bwd runtime of ``vsh`` against ``cg``, ``gaunt_grid`` and ``e3nn`` (L = 1..8, batch 10^4).

Runs the MIMO setting of :mod:`equitensor.bench.microbench` (natural-parity irreps, one copy of
each degree up to L in both inputs, up to 2L out, multiplicity 1, shared weights) and writes
``benchmarks/results/vsh_speed.csv`` (+ ``.png``)::

    flock /tmp/equitensor-bench.lock python benchmarks/vsh_speed.py --repeats 5 --threads 2
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from equitensor.bench.microbench import main as microbench

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--L", default="1-8", help="degrees: '1-8', '2,4,8'")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--backends", default="vsh,cg,gaunt_grid,e3nn")
    parser.add_argument("--out", default=str(RESULTS), help="directory for vsh_speed.csv/.png")
    args = parser.parse_args(argv)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        command = ["--backends", args.backends, "--settings", "mimo", "--L", args.L, "--pass", "fwdbwd",
                   "--dtype", "float32", "--batch", "10000", "--repeats", str(args.repeats), "--out", scratch]
        if args.threads:
            command += ["--threads", str(args.threads)]
        status = microbench(command)
        for suffix in (".csv", ".png"):
            produced = Path(scratch) / f"microbench_mimo{suffix}"
            if produced.exists():
                os.replace(produced, out / f"vsh_speed{suffix}")  # same folder: an atomic rename
    return status


if __name__ == "__main__":
    sys.exit(main())
