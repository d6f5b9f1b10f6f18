"""MACE training/inference step per backend combination vs mace-torch: ``python benchmarks/model_step.py --help``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from equitensor.bench.model_step import main  # noqa: E402
from equitensor.bench.output import with_default_out  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(with_default_out(sys.argv[1:], Path(__file__).resolve().parent / "results")))
