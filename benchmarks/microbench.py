"""Tensor-product microbenchmark (SISO/SIMO/MIMO after Xie et al., MACE convolution, self-product).

Thin wrapper of :mod:`equitensor.bench.microbench`; same as ``equitensor bench tp ...``.
Example (the numbers in docs/benchmarks_tp.md)::

    python benchmarks/microbench.py --backends cg,e3nn --settings mace,selfprod,mimo --L 1-6 \\
        --dtype float32 --pass fwd,fwdbwd --threads 2
"""

import sys
from pathlib import Path

from equitensor.bench.microbench import main
from equitensor.bench.output import with_default_out

if __name__ == "__main__":
    sys.exit(main(with_default_out(sys.argv[1:], Path(__file__).resolve().parent / "results")))
