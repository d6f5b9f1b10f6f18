"""Expressivity table of every backend (thin wrapper of ``equitensor bench expressivity``)."""

import sys

from equitensor.bench.expressivity import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
