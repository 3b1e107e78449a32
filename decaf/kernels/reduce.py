"""Row reductions for the kernels: float64 sums over a contiguous 1-D row.

Eight independent accumulators, combined pairwise at the end: without fastmath LLVM may not
reorder a single running sum, which then runs at one add per FP-add latency (4x slower than
memory here); eight chains hide it.  The order differs from a left-to-right sum only by
rounding, which float64 accumulation of float32 values keeps far below float32 resolution.

``row_sum(a)``            sum a_j
``row_dot(a, b)``         sum a_j b_j            (the products in the arrays' dtype, as Caffe's)
``row_sqdev(a, mu)``      sum (a_j - mu)^2       (in float64)
``row_dot_sum(a, b)``     both of the first two in one pass
``row_sum_sq(a, shift)``  sum (a_j - shift), sum (a_j - shift)^2 in one pass
"""
from numba import njit


@njit(cache=True)
def row_sum(a):
    n = a.size
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
    j = 0
    while j + 8 <= n:
        t0 += a[j]
        t1 += a[j + 1]
        t2 += a[j + 2]
        t3 += a[j + 3]
        t4 += a[j + 4]
        t5 += a[j + 5]
        t6 += a[j + 6]
        t7 += a[j + 7]
        j += 8
    t = ((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))
    while j < n:
        t += a[j]
        j += 1
    return t


@njit(cache=True)
def row_dot(a, b):
    n = a.size
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
    j = 0
    while j + 8 <= n:
        t0 += a[j] * b[j]
        t1 += a[j + 1] * b[j + 1]
        t2 += a[j + 2] * b[j + 2]
        t3 += a[j + 3] * b[j + 3]
        t4 += a[j + 4] * b[j + 4]
        t5 += a[j + 5] * b[j + 5]
        t6 += a[j + 6] * b[j + 6]
        t7 += a[j + 7] * b[j + 7]
        j += 8
    t = ((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))
    while j < n:
        t += a[j] * b[j]
        j += 1
    return t


@njit(cache=True)
def row_sqdev(a, mu):
    n = a.size
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
    j = 0
    while j + 8 <= n:
        d0, d1, d2, d3 = a[j] - mu, a[j + 1] - mu, a[j + 2] - mu, a[j + 3] - mu
        d4, d5, d6, d7 = a[j + 4] - mu, a[j + 5] - mu, a[j + 6] - mu, a[j + 7] - mu
        t0 += d0 * d0
        t1 += d1 * d1
        t2 += d2 * d2
        t3 += d3 * d3
        t4 += d4 * d4
        t5 += d5 * d5
        t6 += d6 * d6
        t7 += d7 * d7
        j += 8
    t = ((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))
    while j < n:
        d = a[j] - mu
        t += d * d
        j += 1
    return t


@njit(cache=True)
def row_dot_sum(a, b):
    """(sum a_j b_j, sum a_j) in one pass over a (four chains each)."""
    n = a.size
    p0 = p1 = p2 = p3 = 0.0
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= n:
        g0, g1, g2, g3 = a[j], a[j + 1], a[j + 2], a[j + 3]
        p0 += g0 * b[j]
        p1 += g1 * b[j + 1]
        p2 += g2 * b[j + 2]
        p3 += g3 * b[j + 3]
        s0 += g0
        s1 += g1
        s2 += g2
        s3 += g3
        j += 4
    p, s = (p0 + p1) + (p2 + p3), (s0 + s1) + (s2 + s3)
    while j < n:
        p += a[j] * b[j]
        s += a[j]
        j += 1
    return p, s


@njit(cache=True)
def row_sum_sq(a, shift):
    """(sum (a_j - shift), sum (a_j - shift)^2) in one pass, in float64 (the shifted-data
    variance: with ``shift`` a value of the data the cancellation stays small)."""
    n = a.size
    p0 = p1 = p2 = p3 = 0.0
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= n:
        d0, d1, d2, d3 = a[j] - shift, a[j + 1] - shift, a[j + 2] - shift, a[j + 3] - shift
        s0 += d0
        s1 += d1
        s2 += d2
        s3 += d3
        p0 += d0 * d0
        p1 += d1 * d1
        p2 += d2 * d2
        p3 += d3 * d3
        j += 4
    p, s = (p0 + p1) + (p2 + p3), (s0 + s1) + (s2 + s3)
    while j < n:
        d = a[j] - shift
        s += d
        p += d * d
        j += 1
    return s, p
