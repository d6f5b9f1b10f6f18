"""How the numba kernels of the backends pick their drivers (shared by every numba kernel)."""

from __future__ import annotations

import types

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


class ParallelOrSerial:
    """A numba driver compiled twice from one Python body whose outer loop is ``numba.prange``:
    with ``parallel=True``, and plainly (``prange`` then runs as ``range``). A call runs the
    parallel one when :func:`use_parallel_kernels` says so, else the serial one.

    The serial copy gets its own qualified name: numba's on-disk cache (``cache=True``) keys a
    function by its name and bytecode, not by its jit options (numba issue #6845), so two
    dispatchers of the same function would load each other's machine code.
    """

    def __init__(self, body, **options):
        serial_body = types.FunctionType(
            body.__code__, body.__globals__, body.__name__, body.__defaults__, body.__closure__
        )
        serial_body.__qualname__ = f"{body.__qualname__}_serial"
        serial_body.__module__ = body.__module__
        self.parallel = numba.njit(parallel=True, **options)(body)
        self.serial = numba.njit(**options)(serial_body)
        self.__doc__ = body.__doc__
        self.__name__ = body.__name__

    def __call__(self, *args):
        return (self.parallel if use_parallel_kernels() else self.serial)(*args)


def parallel_or_serial(**options):
    """Decorator: ``@parallel_or_serial(cache=True)`` on a driver makes it a :class:`ParallelOrSerial`."""
    return lambda body: ParallelOrSerial(body, **options)
