"""In-place passes (top is bottom: Caffe's in-place ReLU, BatchNorm, Scale) at full speed.

A loop ``y[i] = f(x[i])`` vectorises only behind LLVM's runtime overlap test between x and
y; called in place (y is x) the test fails and the scalar loop runs: 3-9x slower than the
same call out of place (ReLU 0.72 vs 0.17 ms, BatchNorm's normalize 1.12 vs 0.17 ms on 1M
floats, benchmarks/NOTES.md section 10).  Reading and writing through one array instead
turns ReLU's select into masked stores (vmaskmovps), as slow on this CPU.

So the kernels walk a row in chunks of ``CHUNK`` values and, when the chunk's source is its
destination, read a private copy of it (``private``): a plain copy loop into a scratch
buffer that lives in L1, then the vectorised loop from the copy.  The values computed are
the same; only the memory they are read from differs.
"""
from numba import njit

#: values per chunk (8 KiB of float32: source copy and destination stay in L1)
CHUNK = 2048


@njit(cache=True, nogil=True, inline="always")
def private(xs, ys, tmp):
    """``xs``, or a copy of it in ``tmp`` (at least xs.size long) when xs is ys."""
    if xs.size and xs.ctypes.data == ys.ctypes.data:
        t = tmp[:xs.size]
        for j in range(xs.size):
            t[j] = xs[j]
        return t
    return xs


@njit(cache=True, nogil=True, inline="always")
def rows_per_task(size):
    """Rows of ``size`` values per parallel task: at least one CHUNK of work per task (and
    one scratch buffer per task, not per row)."""
    return max(1, CHUNK // max(size, 1))

