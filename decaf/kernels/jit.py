"""How decaf compiles a kernel: ``@kernel`` = Numba ``njit(cache=True)`` twice, serial and
``parallel=True`` (its ``prange`` loops on Numba's pool), and a call picks one.

Waking Numba's pool costs 30-190 us per call with the ``workqueue`` layer's sleeping workers,
2-15 us with OpenMP's (decaf.kernels.threads), more than a small kernel's whole work: a 16 x 9
bias pass took 50-126 us in parallel (workqueue) against 0.5 us serial (benchmarks/NOTES.md,
section 9).  So a call runs the serial compilation when decaf runs on one thread, or when its
largest array holds fewer than a bar of values: ``PARALLEL_MIN_ELEMENTS``, or
``STREAMING_MIN_ELEMENTS`` for a streaming pass (``@kernel(streaming=True)``: ReLU, Scale,
BatchNorm, Eltwise, softmax, bias and layout moves, a few operations per value), and far lower
bars with one OpenMP pool (``ONE_POOL_*``); the parallel one otherwise.  Both compile the
same source, and every kernel's parallel loop writes disjoint outputs in the serial loop's
order per output, so the choice never changes a result (the serial one takes the parallel
one's NumPy error model: a float division by zero gives inf / nan, as in a ``prange`` loop, no
exception).  Each compilation has its own cache entry (the serial copy of the function
carries a ``_serial`` name), and is compiled on its first call.
"""
import functools
import types

from . import threads
import numpy as np
from numba import njit

# Largest array of a call, in elements, from which the parallel compilation runs (1 << 16
# made the WeChat detector slower at 2 threads than at 1: 15.2-17.8 ms against 13.1-14.8 with
# 1 << 18, training unchanged; benchmarks/NOTES.md, section 10).
PARALLEL_MIN_ELEMENTS = 1 << 18
# ... and for the streaming passes (``@kernel(streaming=True)``: a few operations per value read,
# e.g. ReLU, Scale, BatchNorm, Eltwise), which on a 2-core machine gain nothing from a second
# thread at any size and lose its wake-up (benchmarks/NOTES.md, section 12)
STREAMING_MIN_ELEMENTS = 1 << 23
# With one pool (decaf.kernels.threads.single_pool: OpenMP's workers wake in 2-15 us, and no
# OpenBLAS pool spins beside them) the second thread pays from far smaller arrays: ReLU of 2^18
# values 0.039 -> 0.020 ms, of 2^20 0.29 -> 0.15 ms (ResNet-20 at 2 threads 1.13x; NOTES 15)
ONE_POOL_PARALLEL_MIN_ELEMENTS = 1 << 16
ONE_POOL_STREAMING_MIN_ELEMENTS = 1 << 17


def _renamed(fn, suffix):
    """A copy of ``fn`` whose name (and so its Numba cache file) ends in ``suffix``."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix,
                              fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__ + suffix
    copy.__module__ = fn.__module__
    copy.__doc__ = fn.__doc__
    return copy


class Kernel:
    """A compiled loop: ``serial`` and ``parallel`` Numba dispatchers, one call picks."""

    def __init__(self, fn, streaming=False):
        self.py_func, self.streaming = fn, streaming
        self.serial = njit(cache=True, error_model="numpy")(_renamed(fn, "_serial"))
        self.parallel = njit(cache=True, parallel=True)(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        if threads.get_num_threads() > 1:
            largest = 0
            for a in args:
                size = getattr(a, "size", 0)
                if size > largest:
                    largest = size
            if threads.single_pool():
                bar = (ONE_POOL_STREAMING_MIN_ELEMENTS if self.streaming
                       else ONE_POOL_PARALLEL_MIN_ELEMENTS)
            else:
                bar = STREAMING_MIN_ELEMENTS if self.streaming else PARALLEL_MIN_ELEMENTS
            if largest >= bar:
                return self.parallel(*args)
        return self.serial(*args)


def kernel(fn=None, streaming=False):
    """``@kernel`` / ``@kernel(streaming=True)``: compile ``fn`` as a decaf kernel (see the
    module docstring)."""
    if fn is None:
        return lambda f: Kernel(f, streaming)
    return Kernel(fn, streaming)


@njit(cache=True, inline="always")
def u(i):
    """Index ``i`` (known to be >= 0) as unsigned.  Numba tests every signed array index for
    Python's negative wraparound; in a copy or window loop that branch keeps LLVM from
    vectorizing (im2col of res10's 256 x 19 x 19 columns: 1.5 -> 0.22 ms)."""
    return np.uintp(i)
