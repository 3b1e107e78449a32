"""Eltwise's passes over flat, equally shaped arrays.

``sum2``       y = ca * a + cb * b                (Caffe: y = 0; y += ca a; y += cb b)
``sum_add``    y += cb * b                        (every further bottom)
``relu``       optional in the same pass: y = y > 0 ? y : slope * y (a fused in-place ReLU)
``prod2`` / ``prod_mul``  y = a * b, then y *= b
``max2``       y = a > b ? a : b, mask = a > b ? 0 : 1   (bottom 1 wins ties and NaNs, as Caffe)
``max_next``   where b > y: y = b, mask = k          (a later bottom must be strictly greater)
``max_backward``  dx = dy where mask == k, else 0
Coefficients of 1 are exact (1 * a == a), so no special case is needed.
"""
import numpy as np
from .jit import kernel
from numba import njit, prange

from .inplace import same

BLOCK = 1 << 14


@kernel(streaming=True)
def sum2(a, ca, b, cb, y, relu, slope):
    n = y.size
    for blk in prange((n + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        ab, bb, yb = a[lo:lo + BLOCK], b[lo:lo + BLOCK], y[lo:lo + BLOCK]
        # y may be a or b (in place): that operand read through y's name (one name, no
        # overlap test, decaf.kernels.inplace)
        if same(ab, yb) and same(bb, yb):
            for i in range(yb.size):
                yb[i] = _relu(yb[i] * ca + yb[i] * cb, relu, slope)
        elif same(ab, yb):
            for i in range(yb.size):
                yb[i] = _relu(yb[i] * ca + bb[i] * cb, relu, slope)
        elif same(bb, yb):
            for i in range(yb.size):
                yb[i] = _relu(ab[i] * ca + yb[i] * cb, relu, slope)
        else:
            for i in range(yb.size):         # 1-D views from 0: LLVM vectorises (NOTES, 9)
                yb[i] = _relu(ab[i] * ca + bb[i] * cb, relu, slope)


@njit(cache=True, inline="always")
def _relu(v, relu, slope):
    if relu and not v > 0:
        v = v * slope
    return v


@kernel(streaming=True)
def sum_add(y, b, cb, relu, slope):
    n = y.size
    for blk in prange((n + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        bb, yb = b[lo:lo + BLOCK], y[lo:lo + BLOCK]
        for i in range(yb.size):
            v = yb[i] + bb[i] * cb
            if relu and not v > 0:
                v = v * slope
            yb[i] = v


@kernel(streaming=True)
def prod2(a, b, y):
    n = y.size
    for blk in prange((n + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        ab, bb, yb = a[lo:lo + BLOCK], b[lo:lo + BLOCK], y[lo:lo + BLOCK]
        for i in range(yb.size):
            yb[i] = ab[i] * bb[i]


@kernel(streaming=True)
def prod_mul(y, b):
    n = y.size
    for blk in prange((n + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        bb, yb = b[lo:lo + BLOCK], y[lo:lo + BLOCK]
        for i in range(yb.size):
            yb[i] = yb[i] * bb[i]


@kernel(streaming=True)
def max2(a, b, y, mask):
    n = y.size
    mt = mask.dtype.type
    one = mt(1)
    for blk in prange((n + BLOCK - 1) // BLOCK):
        for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
            av, bv = a[i], b[i]                    # a select and arithmetic, no branch:
            y[i] = av if av > bv else bv           # 5x faster than if / else here
            mask[i] = one - mt(av > bv)


@kernel(streaming=True)
def max_next(b, k, y, mask):
    n = y.size
    mt = mask.dtype.type
    kk = mt(k)
    for blk in prange((n + BLOCK - 1) // BLOCK):
        for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
            bv, yv, m = b[i], y[i], mask[i]
            y[i] = bv if bv > yv else yv
            mask[i] = m + mt(bv > yv) * (kk - m)   # wraps modulo 2^bits and back: exact


@kernel(streaming=True)
def max_backward(dy, mask, k, dx):
    n = dy.size
    ft = dy.dtype.type
    zero, kf = ft(0), ft(k)
    for blk in prange((n + BLOCK - 1) // BLOCK):
        for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
            dx[i] = dy[i] if ft(mask[i]) == kf else zero    # a float compare: vectorizes
