"""In-place passes (top is bottom: Caffe's in-place ReLU, BatchNorm, Scale) at full speed.

A loop ``y[i] = f(x[i])`` vectorises only behind LLVM's runtime overlap test between x and
y; called in place (y is x) the test fails and the scalar loop runs: 3-9x slower than the
same call out of place (ReLU 0.72 vs 0.17 ms, BatchNorm's normalize 1.12 vs 0.17 ms on 1M
floats, benchmarks/NOTES.md section 10).  So each pass tests ``same(x, y)`` per row and,
in place, runs the loop through one name, ``y[i] = f(y[i])``: no overlap test, and the
select-based bodies (``v if v > 0 else v * slope``, always stored) vectorise.  This replaced
reading a private copy of each chunk (``x`` copied into an L1 buffer first): on the AVX-512
machine of benchmarks/NOTES.md section 14 one name was 20-40 % faster (ReLU over 1M floats
0.178 -> 0.139 ms; BatchNorm + Scale + ReLU of WeChat's stage1, 16 x 24 x 192 x 192, 3.6 ->
2.4 ms).  The values computed are the same either way.
"""
from numba import njit

#: values per chunk of a row (the unit of the kernels' inner loops)
CHUNK = 2048


@njit(cache=True, nogil=True, inline="always")
def same(xs, ys):
    """xs and ys are the same memory (an in-place call)."""
    return xs.size == 0 or xs.ctypes.data == ys.ctypes.data


@njit(cache=True, nogil=True, inline="always")
def affine_relu(v, a, b, has_scale, has_bias, relu, slope):
    """v * a (if has_scale) + b (if has_bias), then ReLU(slope) (if relu): Scale's and ReLU's
    operations in their order."""
    if has_scale:
        v = v * a
    if has_bias:
        v = v + b
    if relu and not v > 0:
        v = v * slope
    return v


@njit(cache=True, nogil=True, inline="always")
def rows_per_task(size):
    """Rows of ``size`` values per parallel task: at least one CHUNK of work per task."""
    return max(1, CHUNK // max(size, 1))
