"""How the numba kernels of the backends pick their drivers (shared by every numba kernel)."""

from __future__ import annotations

import numba
import torch


def use_parallel_kernels() -> bool:
    """Run the numba kernels in parallel when torch has more than one thread (numba then follows
    ``torch.get_num_threads()``); with one, the serial drivers never wake numba's OpenMP pool,
    whose idle workers spin and take CPU from the thread doing the work."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if threads > 1:
        numba.set_num_threads(threads)
    return threads > 1
