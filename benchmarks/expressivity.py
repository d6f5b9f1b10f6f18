"""Expressivity table of every backend (thin wrapper of ``equitensor bench expressivity``)."""

import sys
from pathlib import Path

from equitensor.bench.expressivity import main
from equitensor.bench.output import with_default_out

if __name__ == "__main__":
    sys.exit(main(with_default_out(sys.argv[1:], Path(__file__).resolve().parent / "results")))
