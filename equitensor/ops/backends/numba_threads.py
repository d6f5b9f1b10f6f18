"""How the numba kernels of the backends pick their drivers (shared by every numba kernel)."""

from __future__ import annotations

import types
from collections.abc import Callable

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


class ThreadedKernel:
    """A numba driver written once with ``numba.prange``, compiled as a parallel and a serial kernel.

    ``parallel`` is ``numba.njit(parallel=True, **options)(body)``; ``serial`` is
    ``numba.njit(**options)`` of the same body, where ``prange`` runs as ``range`` and numba's
    thread pool is never started. Calling the object runs the one that
    :func:`use_parallel_kernels` picks. Use as a decorator::

        @ThreadedKernel.define(cache=True)
        def _driver(x, out):
            for it in numba.prange(n_tiles(x)):
                ...
    """

    def __init__(self, body: Callable, **options):
        self.__wrapped__ = body
        self.parallel = numba.njit(parallel=True, **options)(body)
        # numba's on-disk cache is named by the function's qualified name and keyed by its
        # bytecode, not by its compile options: a second dispatcher of the same function would
        # load the parallel machine code, so the serial one compiles a renamed copy.
        self.serial = numba.njit(**options)(_renamed(body, "_serial"))

    @classmethod
    def define(cls, **options) -> Callable[[Callable], ThreadedKernel]:
        """Decorator form: ``@ThreadedKernel.define(cache=True)``."""
        return lambda body: cls(body, **options)

    def __call__(self, *args):
        kernel = self.parallel if use_parallel_kernels() else self.serial
        return kernel(*args)


def _renamed(function: types.FunctionType, suffix: str) -> types.FunctionType:
    """A copy of ``function`` (same code, globals and closure) whose name ends in ``suffix``."""
    copy = types.FunctionType(
        function.__code__, function.__globals__, function.__name__ + suffix, function.__defaults__, function.__closure__
    )
    copy.__qualname__ = function.__qualname__ + suffix
    copy.__module__ = function.__module__
    copy.__doc__ = function.__doc__
    return copy
