"""``python -m equitensor`` (also what ``torchrun -m equitensor train`` runs)."""

import sys

from .cli import main

sys.exit(main())
